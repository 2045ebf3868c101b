"""Replays from the dead-letter queue, from the API and from admin."""

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from deliveries.leases import queued_lease
from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.enqueue import deliveries_enqueue_on_commit
from webhooks_project.queues import RETRIES_QUEUE

REPLAY_BATCH = 1000
# `remaining` and `skipped` are counted up to this many rows (bounded work).
COUNT_CAP = 1_000_000


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: queued again, left for a next call, skipped."""

    replayed: int
    # Dead letters that still match and can be replayed (up to COUNT_CAP).
    remaining: int
    # Dead letters left alone: their endpoint is inactive, or their event expired
    # (up to COUNT_CAP).
    skipped: int

    @classmethod
    def total(cls, results: list["ReplayResult"]) -> "ReplayResult":
        """The sum of several replays' results."""
        return cls(
            replayed=sum(result.replayed for result in results),
            remaining=sum(result.remaining for result in results),
            skipped=sum(result.skipped for result in results),
        )

    def as_response(self) -> dict[str, int]:
        """The API's answer: `remaining` and `skipped` only when there are any."""
        answer = {"replayed": self.replayed}
        if self.remaining:
            answer["remaining"] = self.remaining
        if self.skipped:
            answer["skipped"] = self.skipped
        return answer


def dead_letters_replay(
    *, queryset: QuerySet[Delivery], limit: int | None = None
) -> ReplayResult:
    """Queue the oldest dead letters of `queryset` again, at most `limit` of them.

    `limit` defaults to WEBHOOK_REPLAY_MAX: one call never does unbounded work;
    the caller calls again while `remaining` says so. Dead letters of inactive
    endpoints are skipped (they would only be dead-lettered again), and so are
    those of events past their expiry (a retry with `force` replays one). Each
    replay starts a fresh round of retries. Rows are claimed in batches with
    SKIP LOCKED so a concurrent replay or sweep never queues one twice.
    """
    limit = settings.WEBHOOK_REPLAY_MAX if limit is None else limit
    dead = queryset.filter(status=DeliveryStatus.DEAD_LETTER).order_by()
    now = timezone.now()
    live = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    replayable = dead.filter(live, endpoint__is_active=True)
    oldest_first = replayable.order_by("dead_lettered_at", "id").select_for_update(
        skip_locked=True, of=("self",)
    )
    replayed = 0
    while replayed < limit:
        with transaction.atomic():
            batch = min(REPLAY_BATCH, limit - replayed)
            rows = list(oldest_first.values_list("id", "endpoint_id")[:batch])
            if not rows:
                break
            ids = [row[0] for row in rows]
            now = timezone.now()
            Delivery.objects.filter(pk__in=ids).update(
                status=DeliveryStatus.PENDING,
                round_start=F("attempt_count"),
                next_attempt_at=now,
                lease_expires_at=queued_lease(now),
                dead_letter_reason="",
                dead_lettered_at=None,
                updated_at=now,
            )
            # Replays may be many: they use the retries queue, not the fresh one.
            deliveries_enqueue_on_commit(rows, queue=RETRIES_QUEUE)
        replayed += len(ids)
    return ReplayResult(
        replayed=replayed,
        remaining=_bounded_count(replayable),
        skipped=_bounded_count(
            dead.filter(Q(endpoint__is_active=False) | Q(expires_at__lte=now))
        ),
    )


def _bounded_count(queryset: QuerySet) -> int:
    """`queryset.count()`, reading at most COUNT_CAP rows."""
    return queryset.order_by()[:COUNT_CAP].count()


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
