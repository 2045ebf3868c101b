"""Gunicorn settings: drop a dead worker's Prometheus samples files."""

from prometheus_client import multiprocess


def child_exit(server, worker):
    """Mark the worker dead so its live gauges stop counting."""
    multiprocess.mark_process_dead(worker.pid)
