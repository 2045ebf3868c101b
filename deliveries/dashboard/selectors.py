"""Figures of the operations dashboard, read with a few bounded queries.

Attempts have no time index, but their primary key is a sequence, so the newest
attempts are the highest ids. Every window below is read from the newest
`WINDOW_MAX_ATTEMPTS` attempts only (a backward walk of the primary key index):
the work per poll stays the same however large the table grows. When a window
holds more attempts than that, its figures cover the newest ones and say so
(`sampled`).

Every figure tolerates a second of lag: the page reads them from the replica when
there is one (`using`, chosen by the view through webhooks_project/replica.py).
"""

from datetime import datetime, timedelta

from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from deliveries.flow import gate
from deliveries.models import AttemptOutcome, Delivery, DeliveryAttempt, DeliveryStatus

# Most attempts any window reads: bounds the work of one poll.
WINDOW_MAX_ATTEMPTS = 20_000
# The success-rate windows, by the key they have in the figures.
RATE_WINDOWS = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1)}
# Endpoints with an attempt this recent are listed in the health table.
HEALTH_WINDOW = timedelta(hours=1)
# The dead-letter count stops here: past it the page shows "at least".
DEAD_LETTER_COUNT_CAP = 100_000
# Rows of the attempts feed and of the endpoint health table.
FEED_LENGTH = 25
HEALTH_ENDPOINTS = 50
SUCCESS = Q(outcome=AttemptOutcome.SUCCESS)


def attempt_floor_id(*, max_rows: int, using: str) -> int | None:
    """The lowest id among the newest `max_rows` attempts; None if there are fewer."""
    ids = (
        DeliveryAttempt.objects.using(using)
        .order_by("-id")
        .values_list("id", flat=True)
    )
    return ids[max_rows - 1 : max_rows].first()


def _recent_attempts(floor_id: int | None, using: str):
    """Attempts from `floor_id` up: the newest `WINDOW_MAX_ATTEMPTS` at most."""
    attempts = DeliveryAttempt.objects.using(using).order_by()
    return attempts if floor_id is None else attempts.filter(id__gte=floor_id)


def success_rates(
    *, now: datetime, floor_id: int | None, using: str
) -> dict[str, dict]:
    """Attempts, successes and their ratio in each of `RATE_WINDOWS`."""
    aggregates = {"oldest": Min("started_at")}
    for key, length in RATE_WINDOWS.items():
        in_window = Q(started_at__gte=now - length)
        aggregates[f"{key}_attempts"] = Count("id", filter=in_window)
        aggregates[f"{key}_successes"] = Count("id", filter=in_window & SUCCESS)
    row = _recent_attempts(floor_id, using).aggregate(**aggregates)
    rates = {}
    for key, length in RATE_WINDOWS.items():
        attempts, successes = row[f"{key}_attempts"], row[f"{key}_successes"]
        rates[key] = {
            "attempts": attempts,
            "successes": successes,
            "failures": attempts - successes,
            "rate": successes / attempts if attempts else None,
            # The cap cut the window short: older attempts in it were not read.
            "sampled": floor_id is not None and row["oldest"] >= now - length,
        }
    return rates


def dead_letter_count(*, cap: int, using: str) -> int:
    """Dead-lettered deliveries of every tenant, counted up to `cap` + 1.

    An index-only walk of the partial `delivery_dead_letter` index, stopped early.
    """
    dead = Delivery.objects.using(using).filter(status=DeliveryStatus.DEAD_LETTER)
    dead = dead.order_by()
    return dead[: cap + 1].count()


def recent_attempts(*, limit: int = FEED_LENGTH, using: str) -> list[dict]:
    """The newest attempts with their tenant, endpoint URL and event type."""
    attempts = (
        DeliveryAttempt.objects.using(using)
        .select_related("delivery__tenant", "delivery__endpoint", "delivery__event")
        .only(
            "number",
            "started_at",
            "duration_ms",
            "outcome",
            "response_status",
            "error",
            "delivery__status",
            "delivery__tenant__name",
            "delivery__endpoint__url",
            "delivery__event__event_type",
        )
        .order_by("-id")[:limit]
    )
    return [
        {
            "id": attempt.pk,
            "started_at": attempt.started_at.isoformat(),
            "tenant": attempt.delivery.tenant.name,
            "endpoint_url": attempt.delivery.endpoint.url,
            "event_type": attempt.delivery.event.event_type,
            "delivery_id": str(attempt.delivery_id),
            "number": attempt.number,
            "outcome": attempt.outcome,
            "status_code": attempt.response_status,
            "duration_ms": attempt.duration_ms,
            "error": attempt.error[:200],
        }
        for attempt in attempts
    ]


def endpoint_health(
    *,
    now: datetime,
    floor_id: int | None,
    limit: int = HEALTH_ENDPOINTS,
    using: str,
) -> list[dict]:
    """Endpoints attempted within `HEALTH_WINDOW`, most recently attempted first."""
    groups = list(
        _recent_attempts(floor_id, using)
        .filter(started_at__gte=now - HEALTH_WINDOW)
        .values("delivery__endpoint_id")
        .annotate(
            attempts=Count("id"),
            successes=Count("id", filter=SUCCESS),
            last_id=Max("id"),
        )
        .order_by("-last_id")[:limit]
    )
    last_attempts = (
        DeliveryAttempt.objects.using(using)
        .select_related("delivery__endpoint__tenant")
        .only(
            "outcome",
            "response_status",
            "started_at",
            "delivery__endpoint__url",
            "delivery__endpoint__is_active",
            "delivery__endpoint__disabled_reason",
            "delivery__endpoint__tenant__name",
        )
    )
    last = {
        attempt.pk: attempt
        for attempt in last_attempts.filter(id__in=[g["last_id"] for g in groups])
    }
    rows = []
    for group in groups:
        attempt = last[group["last_id"]]
        endpoint = attempt.delivery.endpoint
        rows.append(
            {
                "endpoint_id": str(endpoint.pk),
                "tenant": endpoint.tenant.name,
                "url": endpoint.url,
                "attempts": group["attempts"],
                "successes": group["successes"],
                "failures": group["attempts"] - group["successes"],
                "last_outcome": attempt.outcome,
                "last_status_code": attempt.response_status,
                "last_attempt_at": attempt.started_at.isoformat(),
                "is_active": endpoint.is_active,
                "disabled_reason": endpoint.disabled_reason,
                "circuit": gate.circuit(endpoint.pk)["state"],
            }
        )
    return rows


def dashboard_snapshot(*, now: datetime | None = None, using: str) -> dict:
    """Every figure of the dashboard, as JSON-ready data, read from `using`."""
    now = now or timezone.now()
    floor_id = attempt_floor_id(max_rows=WINDOW_MAX_ATTEMPTS, using=using)
    dead_letters = dead_letter_count(cap=DEAD_LETTER_COUNT_CAP, using=using)
    return {
        "generated_at": now.isoformat(),
        "window_max_attempts": WINDOW_MAX_ATTEMPTS,
        "success_rates": success_rates(now=now, floor_id=floor_id, using=using),
        "dead_letters": min(dead_letters, DEAD_LETTER_COUNT_CAP),
        "dead_letters_capped": dead_letters > DEAD_LETTER_COUNT_CAP,
        "recent_attempts": recent_attempts(using=using),
        "endpoints": endpoint_health(now=now, floor_id=floor_id, using=using),
    }
