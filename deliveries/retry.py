"""The retry policy: what is retried, and when the next attempt runs."""

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from django.conf import settings

# A receiver that answers 410 Gone asks us to stop: the endpoint is disabled.
GONE = 410
# Statuses whose Retry-After header we honour.
RETRY_AFTER_STATUSES = frozenset({429, 503})


def schedule() -> list[int]:
    """Seconds to wait after attempt 1, 2, ...; its length + 1 is the attempt budget."""
    return list(settings.WEBHOOK_RETRY_SCHEDULE)


def max_attempts() -> int:
    """Attempts in one round (the first one plus one per schedule entry)."""
    return len(schedule()) + 1


def is_success(status: int | None) -> bool:
    """Whether an HTTP status counts as delivered (any 2xx)."""
    return status is not None and 200 <= status < 300


def next_delay(*, attempts_made: int, retry_after: float | None = None) -> float | None:
    """Seconds until the next attempt after `attempts_made` failed ones, or None.

    None means the round is exhausted and the delivery goes to the dead-letter queue.
    A receiver's Retry-After replaces the scheduled delay, bounded by the
    schedule's longest step.
    """
    steps = schedule()
    if attempts_made < 1 or attempts_made > len(steps):
        return None
    if retry_after is not None:
        return bounded_retry_after(retry_after)
    return jittered(steps[attempts_made - 1])


def bounded_retry_after(seconds: float) -> float:
    """A receiver's Retry-After, bounded by the schedule's longest step."""
    longest = max(schedule(), default=seconds)
    return max(0.0, min(seconds, float(longest)))


def jittered(seconds: float) -> float:
    """`seconds` spread by ±WEBHOOK_RETRY_JITTER."""
    spread = settings.WEBHOOK_RETRY_JITTER
    return max(
        0.0,
        seconds
        * random.uniform(  # noqa: S311 (jitter, not a secret)
            1 - spread, 1 + spread
        ),
    )


def parse_retry_after(
    value: str | None, *, now: datetime | None = None
) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())
