"""Gunicorn settings: no control socket; drop a dead worker's Prometheus samples."""

from prometheus_client import multiprocess

# Nothing here uses gunicornc, and every instance on a machine would share its
# one default path (~/.gunicorn/gunicorn.ctl): a second instance took it over.
control_socket_disable = True


def child_exit(server, worker):
    """Mark the worker dead so its live gauges stop counting."""
    # Imported here: the config file is read before gunicorn's --chdir applies.
    from webhooks_project import multiproc

    if multiproc.shared():  # else each process counts alone: nothing to clean up
        multiprocess.mark_process_dead(multiproc.process_identifier(worker.pid))
