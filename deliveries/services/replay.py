"""Replays from the dead-letter queue, from the API and from admin."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.enqueue import deliveries_enqueue_on_commit
from webhooks_project.queues import RETRIES_QUEUE

REPLAY_BATCH = 1000


def dead_letters_replay(*, queryset: QuerySet[Delivery]) -> int:
    """Queue every dead-lettered delivery in `queryset` again; return how many.

    Each replay starts a fresh round of retries. Rows are claimed in batches with
    SKIP LOCKED so a concurrent replay or sweep never queues one twice.
    """
    replayed = 0
    dead = queryset.filter(status=DeliveryStatus.DEAD_LETTER).order_by()
    while True:
        with transaction.atomic():
            rows = list(
                dead.select_for_update(skip_locked=True).values_list(
                    "id", "endpoint_id"
                )[:REPLAY_BATCH]
            )
            if not rows:
                return replayed
            ids = [row[0] for row in rows]
            now = timezone.now()
            Delivery.objects.filter(pk__in=ids).update(
                status=DeliveryStatus.PENDING,
                round_start=F("attempt_count"),
                next_attempt_at=now,
                lease_expires_at=now
                + timedelta(seconds=settings.WEBHOOK_QUEUE_LEASE_SECONDS),
                dead_letter_reason="",
                dead_lettered_at=None,
                updated_at=now,
            )
            # Replays may be many: they use the retries queue, not the fresh one.
            deliveries_enqueue_on_commit(rows, queue=RETRIES_QUEUE)
        replayed += len(ids)


def dead_letters_filter(
    *,
    queryset: QuerySet[Delivery],
    endpoint_id=None,
    since: datetime | None = None,
    until: datetime | None = None,
    ids: list | None = None,
) -> QuerySet[Delivery]:
    """Narrow dead letters by endpoint, dead-lettering time window and ids."""
    queryset = queryset.filter(status=DeliveryStatus.DEAD_LETTER)
    if endpoint_id is not None:
        queryset = queryset.filter(endpoint_id=endpoint_id)
    if since is not None:
        queryset = queryset.filter(dead_lettered_at__gte=since)
    if until is not None:
        queryset = queryset.filter(dead_lettered_at__lt=until)
    if ids is not None:
        queryset = queryset.filter(pk__in=ids)
    return queryset
