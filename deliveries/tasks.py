"""Celery tasks: thin wrappers that take ids and call services."""

import logging
import math

from celery import shared_task

from deliveries.broker import endpoint_queues_backlog, queue_backlog
from deliveries.flow import isolation
from deliveries.outages import DATABASE_ERRORS, outage_delay
from deliveries.services.attempts import delivery_run
from deliveries.services.dead_letter_events import dead_letter_events_publish
from deliveries.services.partitions import attempt_partitions_maintain
from deliveries.services.retention import events_purge_expired
from deliveries.services.sweeps import (
    attempt_logs_cleanup,
    dead_letter_count,
    deleted_endpoints_purge,
    deliveries_dead_letter_exhausted,
    deliveries_enqueue_due,
    deliveries_expire,
    open_circuits_refresh,
)
from portal.services import portal_sessions_purge
from subscriptions.services import expired_secrets_delete
from webhooks_project.queues import RETRIES_QUEUE

logger = logging.getLogger(__name__)


@shared_task(
    name="deliveries.deliver",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
    ignore_result=True,
    # Threads-pool workers run it through the delivery engine (deliveries/engine).
    Strategy="deliveries.engine.strategy:delivery_strategy",
)
def deliver(self, delivery_id: str, endpoint_id: str | None = None) -> None:
    """Attempt one delivery; short retries go back through the broker.

    `endpoint_id` is the publisher's hint: the delivery engine may postpone
    the delivery unclaimed while its endpoint refuses; the attempt itself reads
    the row.
    """
    try:
        decision = delivery_run(delivery_id=delivery_id)
    except DATABASE_ERRORS as exc:
        # The one outage policy (deliveries/outages.py); the lease covers the rest.
        countdown = max(1, math.ceil(outage_delay(self.request.retries)))
        raise self.retry(exc=exc, countdown=countdown, queue=RETRIES_QUEUE) from exc
    if decision.retry_in is not None:
        # Native delayed delivery counts whole seconds, at least one. Retries and
        # postponed deliveries use their own queue so they never delay fresh ones.
        raise self.retry(
            countdown=max(1, math.ceil(decision.retry_in)), queue=RETRIES_QUEUE
        )


@shared_task(name="deliveries.enqueue_due", ignore_result=True)
def enqueue_due() -> int:
    """Enqueue due retries and lost deliveries; expire what is past its expiry."""
    enqueued = deliveries_enqueue_due().enqueued
    deliveries_expire()
    return enqueued


@shared_task(name="deliveries.sweep_dead_letters", ignore_result=True)
def sweep_dead_letters() -> int:
    """Enqueue lost deliveries, dead-letter exhausted ones, refresh the gauges."""
    deliveries_enqueue_due()
    deliveries_dead_letter_exhausted()
    open_circuits_refresh()
    queue_backlog()
    if isolation.enabled():
        endpoint_queues_backlog()
    size = dead_letter_count()
    logger.info("dead-letter queue holds %d deliveries", size)
    return size


@shared_task(name="deliveries.publish_dead_letter_events", ignore_result=True)
def publish_dead_letter_events() -> int:
    """Publish the minute's platform.delivery.dead_lettered summaries."""
    return dead_letter_events_publish()


@shared_task(name="deliveries.cleanup_attempt_logs", ignore_result=True)
def cleanup_attempt_logs() -> int:
    """Delete attempt logs and secrets past their retention, deleted endpoints, and
    long-expired portal sessions."""
    deleted = attempt_logs_cleanup()
    secrets = expired_secrets_delete()
    endpoints = deleted_endpoints_purge()
    portal_sessions = portal_sessions_purge()
    logger.info(
        "deleted %d old attempt logs, %d expired secrets, %d deleted endpoints, "
        "%d expired portal sessions",
        deleted,
        secrets,
        endpoints,
        portal_sessions,
    )
    return deleted


@shared_task(name="deliveries.purge_expired_events", ignore_result=True)
def purge_expired_events() -> int:
    """Delete events past their tenant's retention (deliveries all final), with
    their deliveries and attempts, for a bounded time."""
    return events_purge_expired().events


@shared_task(name="deliveries.maintain_attempt_partitions", ignore_result=True)
def maintain_attempt_partitions() -> int:
    """Create the attempts table's weekly partitions ahead and drop those past
    the horizon; how many it dropped."""
    return len(attempt_partitions_maintain().dropped)
