"""When a delivery runs next: retries, postponements, dead letters, manual requeue."""

import functools
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from deliveries import retry
from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.enqueue import deliveries_enqueue_on_commit
from webhooks_project import metrics
from webhooks_project.queues import DELIVERIES_QUEUE
from webhooks_project.rawsql import not_by_index, prepared, uuid_array

# The dead-letter reason of a delivery whose round of attempts all failed.
RETRIES_EXHAUSTED_REASON = "retries exhausted"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttemptDecision:
    """What the task should do after it handled a delivery."""

    attempted: bool
    status: str | None = None
    # Seconds until the next attempt when the broker should carry it (short delays).
    retry_in: float | None = None
    # Why the attempt was put off without being made (flow control), if it was.
    postponed: str = ""


SKIPPED = AttemptDecision(attempted=False)
# Flow-control refusals that wait in PostgreSQL whatever their wait: a hanging
# (or stalled) endpoint's backlog would otherwise cycle through the delayed
# queues until its requests time out. A busy endpoint's short waits ride the
# broker.
WAIT_IN_DATABASE = frozenset({"hanging", "stalled"})
# A `broker_max` that keeps every wait out of the broker.
NEVER = -1.0


def set_next_attempt(
    delivery: Delivery, *, delay: float, now, broker_max: float | None = None
) -> float | None:
    """Schedule the delivery `delay` seconds ahead; the broker countdown, if any.

    Waits up to `broker_max` (WEBHOOK_BROKER_COUNTDOWN_MAX by default) ride
    RabbitMQ's delayed delivery, with a lease that lets the sweep cover a lost
    message; longer ones stay in PostgreSQL (lease = due time) and the sweep
    enqueues them when due.
    """
    if broker_max is None:
        broker_max = settings.WEBHOOK_BROKER_COUNTDOWN_MAX
    delivery.next_attempt_at = now + timedelta(seconds=delay)
    if delay <= broker_max:
        delivery.lease_expires_at = delivery.next_attempt_at + timedelta(
            seconds=settings.WEBHOOK_QUEUE_LEASE_SECONDS
        )
        return delay
    delivery.lease_expires_at = delivery.next_attempt_at
    return None


def schedule_retry(
    delivery: Delivery, *, retry_after: float | None, spend: bool, now
) -> float | None:
    """After a failed attempt: the next one per the policy, or the dead-letter queue.

    With `spend=False` (a receiver's 429/503 with Retry-After) the attempt does not
    count against the schedule: the round starts one attempt later.
    """
    if spend:
        delay = retry.next_delay(
            attempts_made=delivery.attempt_count - delivery.round_start,
            retry_after=retry_after,
        )
    else:
        delivery.round_start += 1
        delay = retry.bounded_retry_after(retry_after or 0.0)
    if delay is None:
        mark_dead(delivery, reason=RETRIES_EXHAUSTED_REASON, now=now)
        return None
    delivery.status = DeliveryStatus.FAILED
    return set_next_attempt(delivery, delay=delay, now=now)


def retry_requested_during(delivery: Delivery, *, claimed: Delivery) -> bool:
    """Whether a manual retry was asked for while this attempt held the delivery.

    `delivery` is the row as locked now, `claimed` as this attempt's claim
    returned it. A request noted since the claim is one the API answered with
    `in_progress`, whether it came before the request was sent (a lookup, a
    busy pool) or during it; one noted before the claim was for an earlier
    attempt that never reported (its worker died), and this attempt answers it.
    """
    requested = delivery.retry_requested_at
    return requested is not None and requested != claimed.retry_requested_at


def retry_after_failed_attempt(delivery: Delivery, *, now) -> float:
    """The failed attempt had a manual retry waiting: the next one is due now.

    As a retry of a final delivery does, one whose schedule is spent starts a
    fresh round.
    """
    if delivery.attempt_count - delivery.round_start >= retry.max_attempts():
        delivery.round_start = delivery.attempt_count
    delivery.status = DeliveryStatus.FAILED
    return set_next_attempt(delivery, delay=0.0, now=now)


def mark_dead(delivery: Delivery, *, reason: str, now) -> None:
    """Set the fields of a dead letter (the caller saves)."""
    delivery.status = DeliveryStatus.DEAD_LETTER
    delivery.dead_letter_reason = reason[:255]
    delivery.dead_lettered_at = now
    delivery.next_attempt_at = None
    delivery.lease_expires_at = None


def delivery_dead_letter(*, delivery: Delivery, reason: str) -> None:
    """Move a delivery to the dead-letter queue without an attempt."""
    mark_dead(delivery, reason=reason, now=timezone.now())
    delivery.save(
        update_fields=[
            "status",
            "dead_letter_reason",
            "dead_lettered_at",
            "next_attempt_at",
            "lease_expires_at",
            "updated_at",
        ]
    )
    metrics.DELIVERIES_DEAD_LETTERED.inc()
    logger.info(
        "delivery %s dead-lettered: %s",
        delivery.pk,
        reason,
        extra={
            "tenant_id": delivery.tenant_id,
            "event_id": delivery.event_id,
            "delivery_id": delivery.pk,
            "endpoint_id": delivery.endpoint_id,
            "outcome": "dead_letter",
            "reason": reason,
        },
    )


def deliveries_postpone(
    *, items: list[tuple[Delivery, float, str]]
) -> list[AttemptDecision]:
    """Put claimed deliveries off without spending an attempt, in one statement.

    `items` are (delivery, seconds to wait, flow-control reason) triples.
    """
    if not items:
        return []
    now = timezone.now()
    decisions = []
    for delivery, wait, reason in items:
        delivery.status = (
            DeliveryStatus.FAILED if delivery.attempt_count else DeliveryStatus.PENDING
        )
        countdown = set_next_attempt(
            delivery,
            delay=wait,
            now=now,
            broker_max=(
                NEVER
                if reason in WAIT_IN_DATABASE
                else settings.WEBHOOK_POSTPONE_COUNTDOWN_MAX
            ),
        )
        decisions.append(
            AttemptDecision(
                attempted=False,
                status=delivery.status,
                retry_in=countdown,
                postponed=reason,
            )
        )
        metrics.DELIVERIES_POSTPONED.labels(reason=reason).inc()
        if reason == "rate_limited":
            metrics.RATE_LIMIT_HITS.labels(scope="endpoint").inc()
        logger.debug("delivery %s postponed %.1f s: %s", delivery.pk, wait, reason)
    deliveries = [item[0] for item in items]
    with connection.cursor() as cursor:
        cursor.execute(
            _postpone_sql(),
            {
                "ids": [str(delivery.pk) for delivery in deliveries],
                "statuses": [delivery.status for delivery in deliveries],
                "due": [delivery.next_attempt_at for delivery in deliveries],
                "leases": [delivery.lease_expires_at for delivery in deliveries],
                "now": now,
            },
        )
    return decisions


def deliveries_put_off(*, delivery_ids: list, due, reason: str) -> int:
    """Move waiting deliveries' due time (and lease) on to `due`, unclaimed.

    For deliveries of an endpoint that flow control keeps refusing: the sweep
    enqueues them when due. Deliveries held by a worker, final ones, and ones
    already due later are left as they are. Returns how many moved.

    A message of a hanging endpoint costs this statement's share and nothing
    else: prepared, one array literal for the ids.
    """
    with prepared(
        _put_off_sql(),
        {
            "ids": uuid_array(delivery_ids),
            "due": max(due, timezone.now()),
            "now": timezone.now(),
            "pending": DeliveryStatus.PENDING,
            "failed": DeliveryStatus.FAILED,
        },
    ) as cursor:
        moved = cursor.rowcount
    metrics.DELIVERIES_POSTPONED.labels(reason=reason).inc(len(delivery_ids))
    return moved


@functools.cache
def _put_off_sql() -> str:
    # Identifiers come from the model's metadata; every value is a parameter.
    return f"""
        UPDATE "{Delivery._meta.db_table}" AS d
        SET "next_attempt_at" = GREATEST(COALESCE(d."next_attempt_at", %(due)s),
                                         %(due)s),
            "lease_expires_at" = GREATEST(COALESCE(d."next_attempt_at", %(due)s),
                                          %(due)s),
            "updated_at" = %(now)s
        WHERE d."id" = ANY(%(ids)s::uuid[])
          AND {not_by_index('d."status" IN (%(pending)s, %(failed)s)')}
    """  # noqa: S608


@functools.cache
def _postpone_sql() -> str:
    # Identifiers come from the model's metadata; every value is a parameter.
    return f"""
        UPDATE "{Delivery._meta.db_table}" AS d
        SET "status" = v.status, "next_attempt_at" = v.due,
            "lease_expires_at" = v.lease, "updated_at" = %(now)s
        FROM unnest(
            %(ids)s::uuid[], %(statuses)s::text[], %(due)s::timestamptz[],
            %(leases)s::timestamptz[]
        ) AS v(id, status, due, lease)
        WHERE d."id" = v.id
    """  # noqa: S608


def delivery_requeue(*, delivery: Delivery) -> Delivery:
    """Queue a delivery again now; a final one starts a fresh round of retries.

    A delivery being attempted right now is not sent twice at once: the request
    is noted, and if that attempt fails the next one is due at once
    (`retry_after_failed_attempt`).
    """
    now = timezone.now()
    with transaction.atomic():
        locked = Delivery.objects.select_for_update().get(pk=delivery.pk)
        if locked.status == DeliveryStatus.IN_PROGRESS and (
            locked.lease_expires_at and locked.lease_expires_at > now
        ):
            locked.retry_requested_at = now
            locked.save(update_fields=["retry_requested_at", "updated_at"])
            return locked
        if locked.status in (DeliveryStatus.SUCCEEDED, DeliveryStatus.DEAD_LETTER):
            locked.round_start = locked.attempt_count
        locked.status = DeliveryStatus.PENDING
        locked.next_attempt_at = now
        locked.lease_expires_at = now + timedelta(
            seconds=settings.WEBHOOK_QUEUE_LEASE_SECONDS
        )
        locked.dead_letter_reason = ""
        locked.dead_lettered_at = None
        locked.save()
        deliveries_enqueue_on_commit(
            [(locked.pk, locked.endpoint_id)], queue=DELIVERIES_QUEUE
        )
    return locked


def deliveries_keep_queued(*, endpoint_id, within: float) -> int:
    """Move on the leases of an endpoint's queued deliveries that pass soon.

    For an endpoint whose own queue a worker stopped reading while it refuses
    deliveries (deliveries/flow/worker_queues.py): its messages wait in RabbitMQ,
    and the sweep must not publish them a second time meanwhile. Leases that
    pass within `within` seconds get a full WEBHOOK_QUEUE_LEASE_SECONDS again;
    deliveries put off to a later time (waiting in PostgreSQL, not queued) are
    left alone. Returns how many moved.
    """
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            _keep_queued_sql(),
            {
                "endpoint": endpoint_id,
                "pending": DeliveryStatus.PENDING,
                "now": now,
                "soon": now + timedelta(seconds=within),
                "lease": now + timedelta(seconds=settings.WEBHOOK_QUEUE_LEASE_SECONDS),
            },
        )
        return cursor.rowcount


@functools.cache
def _keep_queued_sql() -> str:
    # Identifiers come from the model's metadata; every value is a parameter.
    # The range on the lease uses the partial index of open leases.
    return f"""
        UPDATE "{Delivery._meta.db_table}" AS d
        SET "lease_expires_at" = %(lease)s, "updated_at" = %(now)s
        WHERE d."status" = %(pending)s
          AND d."lease_expires_at" > %(now)s AND d."lease_expires_at" <= %(soon)s
          AND d."endpoint_id" = %(endpoint)s
          AND (d."next_attempt_at" IS NULL OR d."next_attempt_at" <= %(now)s)
    """  # noqa: S608
