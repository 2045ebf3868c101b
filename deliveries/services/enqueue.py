"""Publishing delivery tasks after commit, leaving failures to the sweep.

With endpoint windows on (deliveries/window.py, opt-in), what does not fit an
endpoint's window waits in Redis and is published here as its messages settle.
"""

import logging
from collections import Counter
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from deliveries import window
from deliveries.models import Delivery
from deliveries.publisher import Message, PublishError, publisher
from webhooks_project.queues import DELIVERIES_QUEUE

logger = logging.getLogger(__name__)

# Messages published (and confirmed) together.
PUBLISH_BATCH = 500


def deliveries_enqueue_on_commit(
    deliveries: Iterable[tuple], *, queue: str = DELIVERIES_QUEUE
) -> None:
    """Publish one task per (delivery id, endpoint id) to `queue` after commit."""
    messages = [Message(str(d), str(e)) for d, e in deliveries]
    if messages:
        transaction.on_commit(lambda: deliveries_publish(messages, queue=queue))


def deliveries_publish(
    messages: list[Message], *, queue: str = DELIVERIES_QUEUE
) -> int:
    """Publish delivery tasks, as their endpoints' windows allow; return how many.

    Messages beyond an endpoint's window wait in Redis (and older waiting ones
    may go instead). The rows are already committed (the outbox), so a broker
    outage loses nothing: the first failure stops publishing, and the
    unpublished rows' leases are expired so the next sweep enqueues them as soon
    as the broker is back.
    """
    return deliveries_publish_admitted(window.admit(messages, queue=queue))


def deliveries_release(settled: Counter, *, refill: Iterable = ()) -> int:
    """Count settled messages out of their endpoints' windows; publish what follows.

    `refill`: endpoints whose deliveries were just attempted. Returns how many
    were published.
    """
    return deliveries_publish_admitted(window.release(settled, refill=refill))


def deliveries_publish_admitted(admitted: list[tuple[str, Message]]) -> int:
    """Publish (queue, message) pairs that have room in their windows."""
    by_queue: dict[str, list[Message]] = {}
    for queue, message in admitted:
        by_queue.setdefault(queue, []).append(message)
    published = 0
    for queue, messages in by_queue.items():
        for start in range(0, len(messages), PUBLISH_BATCH):
            batch = messages[start : start + PUBLISH_BATCH]
            try:
                publisher().publish(batch, queue=queue)
            except PublishError as exc:
                ordered = [m for listed in by_queue.values() for m in listed]
                _left_to_sweep(ordered[published:], exc)
                return published
            published += len(batch)
    return published


def _left_to_sweep(rest: list[Message], exc: Exception) -> None:
    logger.warning(
        "broker unavailable, %d deliveries left to the sweep: %s", len(rest), exc
    )
    # Out of the windows: the sweep publishes them again (and counts them then).
    window.release(
        Counter(m.endpoint_id for m in rest if m.endpoint_id and not m.countdown)
    )
    # lease = due time: "no message exists", the sweep publishes it at once.
    now = timezone.now()
    Delivery.objects.filter(pk__in=[m.delivery_id for m in rest]).update(
        next_attempt_at=now, lease_expires_at=now
    )
