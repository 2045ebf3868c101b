"""Gunicorn settings: no control socket; drop a dead worker's Prometheus samples."""

import os

from prometheus_client import multiprocess

# Nothing here uses gunicornc, and every instance on a machine would share its
# one default path (~/.gunicorn/gunicorn.ctl): a second instance took it over.
control_socket_disable = True


def child_exit(server, worker):
    """Mark the worker dead so its live gauges stop counting."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return  # each process counts alone: nothing shared to clean up
    # Imported here: the config file is read before gunicorn's --chdir applies.
    from webhooks_project.multiproc import process_identifier

    multiprocess.mark_process_dead(process_identifier(worker.pid))
