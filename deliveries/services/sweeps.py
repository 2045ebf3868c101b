"""Periodic maintenance: enqueue due and lost deliveries, DLQ upkeep, log cleanup."""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import DurationField, ExpressionWrapper, F, Value
from django.db.models.functions import Coalesce, Greatest, Least
from django.utils import timezone

from deliveries import flowcontrol, retry
from deliveries.models import (
    OPEN_STATUSES,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
)
from deliveries.services.enqueue import deliveries_enqueue_on_commit
from webhooks_project import metrics
from webhooks_project.queues import DELIVERIES_QUEUE, RETRIES_QUEUE

logger = logging.getLogger(__name__)

CLEANUP_BATCH = 5000
# The longest a swept row waits before the next sweep, in queue leases.
MAX_LEASE_FACTOR = 8


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did."""

    enqueued: int
    recovered: int


def deliveries_enqueue_due() -> SweepResult:
    """Enqueue deliveries whose lease expired: due retries and lost tasks.

    A pending or failed row whose lease passed is due (long retries wait in the
    database with lease = due time) or its message was lost; an in-progress row
    whose lease passed belongs to a worker that died. `SKIP LOCKED` lets sweeps on
    several machines run at once without queueing a row twice.
    """
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status__in=OPEN_STATUSES, lease_expires_at__lte=now)
            .order_by("lease_expires_at")
            .values_list("id", "status", "attempt_count")[
                : settings.WEBHOOK_SWEEP_BATCH
            ]
        )
        if not rows:
            return SweepResult(enqueued=0, recovered=0)
        ids = [row_id for row_id, _, _ in rows]
        lost = [
            row_id for row_id, status, _ in rows if status == DeliveryStatus.IN_PROGRESS
        ]
        if lost:
            Delivery.objects.filter(pk__in=lost).update(
                status=DeliveryStatus.PENDING, next_attempt_at=now, updated_at=now
            )
        Delivery.objects.filter(pk__in=ids).update(lease_expires_at=_next_lease(now))
        fresh = [row_id for row_id, _, attempts in rows if not attempts]
        retried = [row_id for row_id, _, attempts in rows if attempts]
        deliveries_enqueue_on_commit(fresh, queue=DELIVERIES_QUEUE)
        deliveries_enqueue_on_commit(retried, queue=RETRIES_QUEUE)
    if lost:
        logger.warning("recovered %d deliveries from lost workers", len(lost))
    return SweepResult(enqueued=len(ids), recovered=len(lost))


def _next_lease(now):
    """now + the queue lease, doubled for each time the row was swept overdue.

    A row is overdue when its message is lost, or still waiting behind a backlog
    longer than the lease. Waiting as long again as it is already overdue (up to
    eight leases) recovers a lost message just as surely, without publishing every
    row of a long backlog again on every sweep.
    """
    base = timedelta(seconds=settings.WEBHOOK_QUEUE_LEASE_SECONDS)
    overdue = ExpressionWrapper(
        Value(now) - Coalesce("next_attempt_at", "created_at"),
        output_field=DurationField(),
    )
    return Value(now) + Greatest(
        Value(base), Least(overdue, Value(base * MAX_LEASE_FACTOR))
    )


def deliveries_dead_letter_exhausted() -> int:
    """Dead-letter open deliveries that already used their whole round."""
    now = timezone.now()
    exhausted = Delivery.objects.filter(
        status__in=(DeliveryStatus.PENDING, DeliveryStatus.FAILED),
        attempt_count__gte=F("round_start") + retry.max_attempts(),
    )
    count = exhausted.update(
        status=DeliveryStatus.DEAD_LETTER,
        dead_letter_reason="retries exhausted",
        dead_lettered_at=now,
        next_attempt_at=None,
        lease_expires_at=None,
        updated_at=now,
    )
    if count:
        metrics.DELIVERIES_DEAD_LETTERED.inc(count)
        logger.warning("dead-lettered %d exhausted deliveries", count)
    return count


def dead_letter_count() -> int:
    """How many deliveries sit in the dead-letter queue (also sets the gauge)."""
    size = Delivery.objects.filter(status=DeliveryStatus.DEAD_LETTER).count()
    metrics.DLQ_SIZE.set(size)
    return size


def open_circuits_refresh() -> int | None:
    """Set the open-circuits gauge from Redis."""
    count = flowcontrol.open_circuit_count()
    if count is not None:
        metrics.CIRCUITS_OPEN.set(count)
    return count


def attempt_logs_cleanup() -> int:
    """Delete attempt logs of deliveries that succeeded before the retention window."""
    cutoff = timezone.now() - timedelta(hours=settings.WEBHOOK_LOG_RETENTION_HOURS)
    deleted = 0
    while True:
        batch = list(
            DeliveryAttempt.objects.filter(
                delivery__status=DeliveryStatus.SUCCEEDED,
                delivery__succeeded_at__lt=cutoff,
            ).values_list("id", flat=True)[:CLEANUP_BATCH]
        )
        if not batch:
            return deleted
        deleted += DeliveryAttempt.objects.filter(pk__in=batch).delete()[0]
