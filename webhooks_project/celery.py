"""The Celery application, configured from Django settings (CELERY_* names)."""

import functools
import logging
import os

from celery import Celery
from celery.signals import (
    after_setup_logger,
    task_postrun,
    task_prerun,
    task_success,
    worker_init,
    worker_process_init,
    worker_ready,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")

logger = logging.getLogger(__name__)

app = Celery("webhooks_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Finishes the delivery engine's work on shutdown (deliveries/engine).
app.steps["worker"].add("deliveries.engine.strategy:DeliveryEngineStep")
# Follows the endpoints' own queues, when they are on (deliveries/flow/).
app.steps["consumer"].add("deliveries.flow.worker_queues:EndpointQueuesStep")


@after_setup_logger.connect
def _root_level_from_settings(logger, **kwargs) -> None:
    """Workers and beat log at LOG_LEVEL, as the web does.

    Celery keeps Django's handlers (CELERY_WORKER_HIJACK_ROOT_LOGGER is off) but
    sets the root level to its own --loglevel: LOG_LEVEL=WARNING still left
    one INFO line per delivery in every worker.
    """
    from django.conf import settings

    logger.setLevel(settings.LOG_LEVEL)


@worker_init.connect
def _worker_commit_mode(**kwargs) -> None:
    """Let workers commit without waiting for the WAL flush, unless told otherwise.

    A worker's writes (claims, attempt records, statuses) can be redone: if the
    database loses its last few hundred milliseconds in a crash, leases expire and
    the sweep delivers again, with the same webhook-id. Events are accepted by the
    web processes, whose commits stay synchronous. Waiting for the flush on every
    worker commit cost most of the delivery throughput on a slow disk.
    """
    from django.conf import settings
    from django.db import connections

    mode = settings.WEBHOOK_WORKER_SYNCHRONOUS_COMMIT
    options = connections["default"].settings_dict.setdefault("OPTIONS", {})
    extra = options.get("options", "")
    options["options"] = f"{extra} -c synchronous_commit={mode}".strip()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(task=None, **kwargs) -> None:
    """Around each task, drop this thread's broken or expired connections.

    What Django does around each web request: connections live CONN_MAX_AGE
    seconds (health-checked before reuse) instead of one per task. Eager tasks
    (called in-process, e.g. in a test transaction) leave connections alone.
    """
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@functools.cache
def scheduled_task_names() -> frozenset[str]:
    """The names of the tasks beat's schedule runs (settings, read once)."""
    from django.conf import settings

    return frozenset(entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values())


@task_success.connect
def _periodic_task_heartbeat(sender=None, **kwargs) -> None:
    """Stamp the success of each task beat schedules, for the staleness alerts.

    Only the schedule's own tasks get a series (a bounded label), and only a
    success counts: a sweep that fails every minute looks as stale as none.
    Every task's success comes here (each delivery, outside the engine), so the
    test is one set lookup.
    """
    if sender is not None and sender.name in scheduled_task_names():
        from webhooks_project import metrics

        metrics.PERIODIC_TASK_LAST_SUCCESS.labels(sender.name).set_to_current_time()


@worker_ready.connect
def _serve_metrics(**kwargs) -> None:
    """Serve the host's metrics from the worker (WEBHOOK_WORKER_METRICS_PORT)."""
    from webhooks_project import metrics

    metrics.warn_if_alone("worker")
    try:
        listening = metrics.serve_worker_metrics()
    except OSError:
        logger.exception("cannot serve worker metrics (WEBHOOK_WORKER_METRICS_PORT)")
        return
    if listening is not None:
        logger.info("worker metrics on http://%s:%d/metrics", *listening)


@worker_process_init.connect
def _forget_metrics_socket(**kwargs) -> None:
    """A prefork child does not hold the worker's metrics port."""
    from webhooks_project import metrics

    metrics.close_inherited_metrics_socket()
