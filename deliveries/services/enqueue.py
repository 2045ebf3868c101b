"""Publishing delivery tasks after commit, leaving failures to the sweep."""

import logging
from collections.abc import Iterable

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from deliveries.models import OPEN_STATUSES, Delivery
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
    """Publish delivery tasks in confirmed batches; return how many went.

    The rows are already committed (the outbox), so a broker outage loses
    nothing: the first failure stops publishing, and the unpublished rows' leases
    are expired so the next sweep enqueues them as soon as the broker is back.
    """
    published = 0
    for start in range(0, len(messages), PUBLISH_BATCH):
        batch = messages[start : start + PUBLISH_BATCH]
        try:
            publisher().publish(batch, queue=queue)
        except PublishError as exc:
            _left_to_sweep(messages[published:], exc)
            return published
        published += len(batch)
    return published


def _left_to_sweep(rest: list[Message], exc: Exception) -> None:
    logger.warning(
        "broker unavailable, %d deliveries left to the sweep: %s", len(rest), exc
    )
    deliveries_left_to_sweep([m.delivery_id for m in rest])


def deliveries_left_to_sweep(delivery_ids: list) -> None:
    """No message of these open deliveries exists: they wait in PostgreSQL.

    Their leases become waiting ones at their due time, so the sweep publishes
    them when due (at once if they are due already).
    """
    due = Coalesce(F("next_attempt_at"), timezone.now())
    Delivery.objects.filter(pk__in=delivery_ids, status__in=OPEN_STATUSES).update(
        next_attempt_at=due, lease_expires_at=due
    )
