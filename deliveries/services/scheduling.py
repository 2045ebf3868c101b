"""When and where a delivery runs next: retries, waits, dead letters, manual requeue.

`wait_place` is the one decision of where a delivery that may not go now waits:
in the engine's lot (a moment, for a busy endpoint), in RabbitMQ's delayed
delivery (a short wait), or in PostgreSQL (a long one, or while its endpoint
refuses every delivery). The statements that postpone deliveries are in
deliveries.services.postponing.
"""

import enum
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deliveries import retry
from deliveries.leases import lease_for, queued_lease
from deliveries.models import FINAL_STATUSES, Delivery, DeliveryStatus
from deliveries.services.enqueue import deliveries_enqueue_on_commit
from deliveries.services.ordering import lines_release
from webhooks_project import metrics
from webhooks_project.queues import DELIVERIES_QUEUE

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
    # Why the attempt was postponed without being made (flow control), if it was.
    postponed: str = ""


SKIPPED = AttemptDecision(attempted=False)


class Place(enum.StrEnum):
    """Where a delivery that may not go now waits."""

    LOT = "lot"  # in the worker that claimed it, for a moment (engine/lot.py)
    BROKER = "broker"  # in RabbitMQ's delayed delivery: a message exists
    DATABASE = "database"  # in PostgreSQL: no message; the sweep publishes it


# Refusals a busy endpoint gives: a slot or a token frees within a moment.
BUSY_REASONS = frozenset({"concurrency", "rate_limited"})
# Refusals that wait in PostgreSQL whatever their wait: a hanging (or stalled)
# endpoint's backlog would otherwise cycle through the delayed queues until
# its requests time out; a refusing endpoint's ("held") takes nothing anyway.
DATABASE_REASONS = frozenset({"hanging", "stalled", "held"})
# Longest wait in the lot, in seconds: longer ones cost a worker's prefetch.
LOT_WAIT_MAX = 2.0
# Longest flow-control wait in RabbitMQ's delayed delivery, in seconds: a
# delayed message hops through one queue per bit of its countdown, and a busy
# endpoint's overflow would come back again and again.
POSTPONE_BROKER_MAX = 5.0


def wait_place(*, wait: float, reason: str = "") -> Place:
    """Where a delivery waits `wait` seconds, postponed for `reason` ("": a retry).

    A busy endpoint's short waits stay in the worker (if its lot has room; the
    broker otherwise); retries up to WEBHOOK_BROKER_COUNTDOWN_MAX, and other
    flow-control waits up to POSTPONE_BROKER_MAX, ride the broker; the rest,
    and every wait of an endpoint that refuses or hangs, stay in PostgreSQL.
    """
    if reason in BUSY_REASONS and wait <= LOT_WAIT_MAX:
        return Place.LOT
    if reason in DATABASE_REASONS:
        return Place.DATABASE
    if reason:
        broker_max = POSTPONE_BROKER_MAX
    else:
        broker_max = settings.WEBHOOK_BROKER_COUNTDOWN_MAX
    return Place.BROKER if wait <= broker_max else Place.DATABASE


def set_next_attempt(
    delivery: Delivery, *, delay: float, now, reason: str = ""
) -> float | None:
    """Schedule the delivery `delay` seconds ahead; the broker countdown, if any.

    A wait in the broker keeps a queued lease (the sweep covers a lost message);
    one in PostgreSQL a waiting lease (the sweep publishes it when due). A lot's
    wait that ends here (no room, or too long in the lot) rides the broker.
    """
    delivery.next_attempt_at = now + timedelta(seconds=delay)
    in_broker = wait_place(wait=delay, reason=reason) != Place.DATABASE
    delivery.lease_expires_at = lease_for(
        due=delivery.next_attempt_at, queued=in_broker
    )
    return delay if in_broker else None


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


def dead_letter_fields(*, reason: str, now) -> dict:
    """The fields of a dead letter: the one place that says what they are.

    For a model instance (`mark_dead`) and for bulk updates alike.
    """
    return {
        "status": DeliveryStatus.DEAD_LETTER,
        "dead_letter_reason": reason[:255],
        "dead_lettered_at": now,
        "next_attempt_at": None,
        "lease_expires_at": None,
    }


def mark_dead(delivery: Delivery, *, reason: str, now) -> None:
    """Set the fields of a dead letter (the caller saves)."""
    for name, value in dead_letter_fields(reason=reason, now=now).items():
        setattr(delivery, name, value)


def delivery_dead_letter(*, delivery: Delivery, reason: str) -> None:
    """Move a delivery to the dead-letter queue without an attempt."""
    fields = dead_letter_fields(reason=reason, now=timezone.now())
    mark_dead(delivery, reason=reason, now=fields["dead_lettered_at"])
    delivery.save(update_fields=[*fields, "updated_at"])
    lines_release({(delivery.endpoint_id, delivery.ordering_key)})
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


class DeliveryExpired(Exception):
    """A retry of an expired delivery, not forced: it stays as it is."""

    def __init__(self, delivery: Delivery):
        super().__init__(
            "This delivery expired"
            + (f" at {delivery.expires_at.isoformat()}" if delivery.expires_at else "")
            + '; retry with {"force": true} to deliver it anyway.'
        )
        self.delivery = delivery


def delivery_requeue(*, delivery: Delivery, force: bool = False) -> Delivery:
    """Queue a delivery again now; a final one starts a fresh round of retries.

    A delivery being attempted right now is not sent twice at once: the request
    is noted, and if that attempt fails the next one is due at once
    (`retry_after_failed_attempt`). An expired delivery (or one past its
    expiry) raises DeliveryExpired unless `force`; a forced retry lifts the
    delivery's expiry, whatever its status.
    """
    now = timezone.now()
    with transaction.atomic():
        locked = Delivery.objects.select_for_update().get(pk=delivery.pk)
        if locked.is_expired and not force:
            raise DeliveryExpired(locked)
        if force:
            locked.expires_at = None
        if locked.status == DeliveryStatus.IN_PROGRESS and (
            locked.lease_expires_at and locked.lease_expires_at > now
        ):
            locked.retry_requested_at = now
            locked.save(
                update_fields=["retry_requested_at", "expires_at", "updated_at"]
            )
            return locked
        if locked.status in FINAL_STATUSES:
            locked.round_start = locked.attempt_count
        locked.status = DeliveryStatus.PENDING
        locked.next_attempt_at = now
        locked.lease_expires_at = queued_lease(now)
        locked.dead_letter_reason = ""
        locked.dead_lettered_at = None
        locked.save()
        deliveries_enqueue_on_commit(
            [(locked.pk, locked.endpoint_id)], queue=DELIVERIES_QUEUE
        )
    return locked
