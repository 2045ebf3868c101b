"""Periodic maintenance: enqueue due and lost deliveries, DLQ upkeep, log cleanup."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from deliveries import broker, retry
from deliveries.flow import gate, refusals
from deliveries.leases import is_queued, queued_lease
from deliveries.models import (
    OPEN_STATUSES,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
)
from deliveries.services.enqueue import deliveries_enqueue_on_commit
from deliveries.services.ordering import lines_release
from deliveries.services.postponing import deliveries_postpone_refusing
from deliveries.services.scheduling import RETRIES_EXHAUSTED_REASON, dead_letter_fields
from subscriptions.models import Endpoint
from webhooks_project import metrics
from webhooks_project.ids import CLOCK_SLACK
from webhooks_project.queues import DELIVERIES_QUEUE, RETRIES_QUEUE

logger = logging.getLogger(__name__)

# Deliveries per statement of the cleanups (their attempts go with them).
CLEANUP_BATCH = 5000
# Rows one sweep handles (the next sweep takes the rest).
SWEEP_BATCH = 1000
# How many queue leases a row may wait behind a backlog before it is published again.
MAX_LEASE_FACTOR = 8
# A delivery due this long after it was created was postponed on purpose (by flow
# control), not merely published late.
RESCHEDULED_AFTER = timedelta(seconds=1)


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did."""

    enqueued: int
    recovered: int


def deliveries_enqueue_due(*, backlog: int | None = None) -> SweepResult:
    """Enqueue deliveries whose lease expired: due retries and lost tasks.

    Three kinds of rows come up. A row with no message anywhere (a long retry
    kept in the database, or one whose publish failed) has lease = due time and is
    enqueued. An in-progress row whose lease passed belongs to a worker that died
    and is enqueued. A queued row whose lease passed either lost its message or
    still waits behind a backlog: while RabbitMQ reports ready messages (`backlog`,
    read from the broker when not given) it gets a new lease instead, until it is
    MAX_LEASE_FACTOR leases overdue, so a long backlog is not published again on
    every sweep. Rows of an endpoint that refuses every delivery for now are
    not published: they wait until it takes deliveries again (holding). `SKIP
    LOCKED` lets sweeps on several machines run at once without queueing a row
    twice.
    """
    now = timezone.now()
    base = timedelta(seconds=settings.WEBHOOK_QUEUE_LEASE_SECONDS)
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status__in=OPEN_STATUSES, lease_expires_at__lte=now)
            # Past its expiry, a row is settled by deliveries_expire instead.
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
            .order_by("lease_expires_at")
            .values_list(
                "id",
                "status",
                "attempt_count",
                "next_attempt_at",
                "lease_expires_at",
                "created_at",
                "endpoint_id",
                "ordering_key",
            )[:SWEEP_BATCH]
        )
        if not rows:
            return SweepResult(enqueued=0, recovered=0)
        rows = _without_held(rows, now=now)
        lost, queued, due = [], [], []
        for row_id, status, _, next_attempt_at, lease, *_ in rows:
            if status == DeliveryStatus.IN_PROGRESS:
                lost.append(row_id)
            elif (
                is_queued(due=next_attempt_at, lease=lease)
                and now - (next_attempt_at or lease) < base * MAX_LEASE_FACTOR
            ):
                queued.append(row_id)
            else:
                due.append(row_id)
        # Only queued rows need the broker's word (one read, and only then).
        if queued and backlog is None:
            queued_ids = set(queued)
            backlog = (
                broker.queue_backlog({row[6] for row in rows if row[0] in queued_ids})
                or 0
            )
        waiting = queued if backlog else []
        if not backlog:
            due += queued
        if lost:
            Delivery.objects.filter(pk__in=lost).update(
                status=DeliveryStatus.PENDING, next_attempt_at=now, updated_at=now
            )
            # A lost attempt no longer holds its line (a replayed delivery
            # ahead of it may go first).
            lost_ids = set(lost)
            lines_release({(r[6], r[7]) for r in rows if r[0] in lost_ids})
        Delivery.objects.filter(pk__in=[row[0] for row in rows]).update(
            lease_expires_at=queued_lease(now)
        )
        # Retried and postponed deliveries (due later than they were created) go
        # to the retries queue, so that they never delay fresh ones.
        retried = {
            row[0]
            for row in rows
            if row[2] or (row[3] and row[3] - row[5] > RESCHEDULED_AFTER)
        }
        enqueue = lost + due
        endpoints = {row[0]: row[6] for row in rows}
        deliveries_enqueue_on_commit(
            [(i, endpoints[i]) for i in enqueue if i not in retried],
            queue=DELIVERIES_QUEUE,
        )
        deliveries_enqueue_on_commit(
            [(i, endpoints[i]) for i in enqueue if i in retried], queue=RETRIES_QUEUE
        )
    if lost:
        metrics.DELIVERIES_RECOVERED.inc(len(lost))  # the possible duplicates
        logger.warning("recovered %d deliveries from lost workers", len(lost))
    if waiting:
        logger.info("%d overdue deliveries wait behind a backlog", len(waiting))
    return SweepResult(enqueued=len(enqueue), recovered=len(lost))


def _without_held(rows: list, *, now) -> list:
    """The rows left once those of endpoints that take none now were held.

    A refusing endpoint's due rows move on to the end of its refusal. An
    endpoint whose circuit is open and whose cooldown has passed is not
    refusing, but it takes a single attempt, the probe: every other message of
    it would only be received and postponed. Its first row goes as the probe and
    the rest move on one sweep interval, by when the probe has either closed the
    circuit (they are published) or is out or failed (they are held again).
    """
    endpoints = {str(row[6]) for row in rows}
    refusing = refusals.refusing(fresh=True)
    until = {endpoint: refusing[endpoint] for endpoint in endpoints & refusing.keys()}
    waiting = gate.circuits_open(endpoints - until.keys())
    probes: dict[str, object] = {}
    for row in rows:
        if str(row[6]) in waiting:
            probes.setdefault(str(row[6]), row[0])
    next_sweep = now + timedelta(seconds=settings.WEBHOOK_SWEEP_INTERVAL)
    until.update(dict.fromkeys(probes, next_sweep))
    held = set(deliveries_postpone_refusing(until=until, keep=probes.values()))
    if held:
        logger.info("%d deliveries of refusing endpoints held", len(held))
    return [row for row in rows if row[0] not in held]


def deliveries_expire() -> int:
    """Settle open deliveries past their event's expiry as expired.

    Workers no longer claim them; this gives them their final status. An
    attempt in flight finishes first (its recorded failure is expired on the
    next sweep); one whose worker was lost is expired at once. `SKIP LOCKED`,
    at most SWEEP_BATCH a run (the next run takes the rest).
    """
    now = timezone.now()
    lost = Q(status=DeliveryStatus.IN_PROGRESS, lease_expires_at__lt=now)
    waiting = Q(status__in=(DeliveryStatus.PENDING, DeliveryStatus.FAILED))
    count = _settle(
        Delivery.objects.filter(waiting | lost, expires_at__lte=now),
        status=DeliveryStatus.EXPIRED,
        next_attempt_at=None,
        lease_expires_at=None,
        updated_at=now,
    )
    if count:
        metrics.DELIVERIES_EXPIRED.inc(count)
        logger.info("expired %d deliveries", count)
    return count


def deliveries_dead_letter_exhausted() -> int:
    """Dead-letter open deliveries that already used their whole round.

    At most SWEEP_BATCH a run, SKIP LOCKED (the next run takes the rest).
    """
    now = timezone.now()
    fields = dead_letter_fields(reason=RETRIES_EXHAUSTED_REASON, now=now)
    exhausted = Delivery.objects.filter(
        status__in=(DeliveryStatus.PENDING, DeliveryStatus.FAILED),
        attempt_count__gte=F("round_start") + retry.max_attempts(),
    )
    count = _settle(exhausted, **fields, updated_at=now)
    if count:
        metrics.DELIVERIES_DEAD_LETTERED.inc(count)
        logger.warning("dead-lettered %d exhausted deliveries", count)
    return count


def _settle(rows, **fields) -> int:
    """Give at most SWEEP_BATCH of `rows` these final `fields`; their lines go on.

    SKIP LOCKED (the next run takes the rest, and rows a worker holds).
    """
    with transaction.atomic():
        settled = list(
            rows.select_for_update(skip_locked=True).values_list(
                "id", "endpoint_id", "ordering_key"
            )[:SWEEP_BATCH]
        )
        count = Delivery.objects.filter(pk__in=[row[0] for row in settled]).update(
            **fields
        )
        lines_release({(endpoint, key) for _, endpoint, key in settled})
    return count


def dead_letter_count() -> int:
    """How many deliveries sit in the dead-letter queue (also sets the gauge)."""
    size = Delivery.objects.filter(status=DeliveryStatus.DEAD_LETTER).count()
    metrics.DLQ_SIZE.set(size)
    return size


def open_circuits_refresh() -> int | None:
    """Set the open-circuits gauge from Redis."""
    count = gate.open_circuit_count()
    if count is not None:
        metrics.CIRCUITS_OPEN.set(count)
    return count


def attempt_logs_cleanup(*, now: datetime | None = None) -> int:
    """Delete attempt logs past their retention; return how many.

    Succeeded deliveries keep theirs WEBHOOK_LOG_RETENTION_HOURS after their
    success; dead-lettered ones WEBHOOK_RETENTION_DAYS after they were
    dead-lettered, so a receiver cannot grow the database without end.
    """
    now = timezone.now() if now is None else now
    succeeded = _logs_delete(
        status=DeliveryStatus.SUCCEEDED,
        ended="succeeded_at",
        before=now - timedelta(hours=settings.WEBHOOK_LOG_RETENTION_HOURS),
    )
    dead = _logs_delete(
        status=DeliveryStatus.DEAD_LETTER,
        ended="dead_lettered_at",
        before=now - timedelta(days=settings.WEBHOOK_RETENTION_DAYS),
    )
    return succeeded + dead


def _logs_delete(*, status: str, ended: str, before: datetime) -> int:
    """Delete the attempts of deliveries in `status` that `ended` before `before`.

    The deliveries are walked newest first, CLEANUP_BATCH at a time (their
    partial index, by `ended`), and their attempts deleted by delivery id, which
    probes each weekly partition's index: a join would rather scan every
    partition once many deliveries qualify. The walk stops at the first batch
    with no attempt left: earlier runs cleaned from there on. One that a run
    missed goes with its partition at the horizon (services/partitions.py).
    No attempt started after its delivery ended (give or take the hosts'
    clocks): that bound spares the newer partitions.
    """
    deliveries = Delivery.objects.filter(status=status, **{f"{ended}__lt": before})
    deleted = 0
    while True:
        batch = list(
            deliveries.order_by(f"-{ended}", "-id").values_list("id", ended)[
                :CLEANUP_BATCH
            ]
        )
        if not batch:
            return deleted
        gone = DeliveryAttempt.objects.filter(
            delivery_id__in=[pk for pk, _ in batch],
            started_at__lte=batch[0][1] + CLOCK_SLACK,
        ).delete()[0]
        if not gone:
            return deleted
        deleted += gone
        last_pk, last_ended = batch[-1]
        deliveries = deliveries.filter(**{f"{ended}__lte": last_ended}).exclude(
            **{ended: last_ended, "id__gte": last_pk}
        )


def deleted_endpoints_purge() -> int:
    """Delete deleted endpoints with their deliveries and attempts; return how many.

    In batches (short locks), so that deleting an endpoint with millions of
    deliveries is bounded work for its request and for every statement here.
    """
    endpoint_ids = list(
        Endpoint.objects.filter(deleted_at__isnull=False).values_list("pk", flat=True)
    )
    for endpoint_id in endpoint_ids:
        while True:
            batch = list(
                Delivery.objects.filter(endpoint_id=endpoint_id).values_list(
                    "pk", flat=True
                )[:CLEANUP_BATCH]
            )
            if not batch:
                break
            # Their attempts go first in the same transaction, by delivery id (a
            # probe of each partition's index): Django's cascade.
            Delivery.objects.filter(pk__in=batch).delete()
        Endpoint.objects.filter(pk=endpoint_id).delete()  # and its secrets
    return len(endpoint_ids)
