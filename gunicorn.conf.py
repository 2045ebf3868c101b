"""Gunicorn settings: drop a dead worker's Prometheus samples files."""

from prometheus_client import multiprocess


def child_exit(server, worker):
    """Mark the worker dead so its live gauges stop counting."""
    # Imported here: the config file is read before gunicorn's --chdir applies.
    from webhooks_project.multiproc import process_identifier

    multiprocess.mark_process_dead(process_identifier(worker.pid))
