"""`platform.delivery.dead_lettered`: one summary per endpoint and minute.

A beat task (deliveries.publish_dead_letter_events, every minute) reads the
dead letters of each closed one-minute window and publishes, per endpoint with
any, one event standing for them all: the latest one's ids and reason, how many
there were, the first and the last moment. Workers pay nothing for it, and a
burst (an endpoint disabled with a million waiting deliveries) is one event.

Each summary's idempotency key is its endpoint and window, so a run that looks
at a window again (the next run's look back, a second beat started by mistake,
a retried task) publishes nothing twice. Every run looks back LOOKBACK_WINDOWS
windows, so runs missed for up to that long are caught up.

Dead letters of deliveries of platform events are never summarised: an
endpoint that fails platform deliveries would otherwise make events about
them, which other failing subscribers would fail in turn, without end.
"""

import functools
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.services.platform_events import (
    DELIVERY_DEAD_LETTERED,
    PlatformEvent,
    iso,
    platform_events_publish,
)
from subscriptions.matching import RESERVED_PREFIX, WILDCARD, patterns_matching
from subscriptions.models import Endpoint

WINDOW = timedelta(seconds=60)
# A window is summarised once it ended this long ago: a dead letter is stamped
# (dead_lettered_at) before its transaction commits, and machines' clocks differ.
SETTLE = timedelta(seconds=30)
# Windows every run looks at: runs missed for up to this many minutes are
# caught up (their summaries are late, never lost or doubled).
LOOKBACK_WINDOWS = 10
# Summaries published per statement.
PUBLISH_BATCH = 500


def window_start(moment: datetime) -> datetime:
    """The start of the one-minute window `moment` falls in (UTC, whole minutes)."""
    seconds = WINDOW.total_seconds()
    return datetime.fromtimestamp(
        moment.timestamp() // seconds * seconds, tz=moment.tzinfo
    )


def dead_letter_events_publish(*, now: datetime | None = None) -> int:
    """Publish the summaries of the closed windows of the look back; return how
    many were new (the rest were published before, or have no recipient)."""
    now = timezone.now() if now is None else now
    until = window_start(now - SETTLE)
    since = until - WINDOW * LOOKBACK_WINDOWS
    events = [_summary(row) for row in _summaries(since=since, until=until)]
    published = 0
    for start in range(0, len(events), PUBLISH_BATCH):
        published += platform_events_publish(
            events=events[start : start + PUBLISH_BATCH]
        )
    return published


def _summary(row: tuple) -> PlatformEvent:
    (endpoint_id, started, tenant_id, consumer) = row[:4]
    (delivery_id, event_id, reason, count, first_at, last_at) = row[4:]
    return PlatformEvent(
        tenant_id=tenant_id,
        event_type=DELIVERY_DEAD_LETTERED,
        consumer=consumer,
        payload={
            "delivery_id": str(delivery_id),
            "event_id": str(event_id),
            "endpoint_id": str(endpoint_id),
            "reason": reason,
            "consumer": consumer,
            "count": count,
            "first_at": iso(first_at),
            "last_at": iso(last_at),
        },
        idempotency_key=(
            f"{DELIVERY_DEAD_LETTERED}:{endpoint_id}:{int(started.timestamp())}"
        ),
    )


def _summaries(*, since: datetime, until: datetime) -> list[tuple]:
    """Per endpoint and window of [since, until): its latest dead letter, count,
    first and last moment; only in tenants with a platform subscriber."""
    with connection.cursor() as cursor:
        cursor.execute(_summaries_sql(), _summaries_params(since=since, until=until))
        return cursor.fetchall()


def _summaries_params(*, since: datetime, until: datetime) -> dict:
    return {
        "since": since,
        "until": until,
        "window": WINDOW,
        "dead": DeliveryStatus.DEAD_LETTER,
        # the filters that name the type (`*` does not ask for platform events)
        "patterns": [
            p for p in patterns_matching(DELIVERY_DEAD_LETTERED) if p != WILDCARD
        ],
        "reserved": RESERVED_PREFIX,
    }


@functools.cache
def _summaries_sql() -> str:
    event, delivery = Event._meta.db_table, Delivery._meta.db_table
    endpoint = Endpoint._meta.db_table
    # Tenants with an active endpoint that names the type (the GIN index on
    # event_types) first: only their dead letters are read, the look back's
    # range through an index of dead letters by dead_lettered_at. Who among
    # them receives a summary is platform_events.recipient_sql's to say.
    # Identifiers come from the models' metadata; every value is a parameter.
    return f"""
        WITH tenants AS (
            SELECT DISTINCT "tenant_id" FROM "{endpoint}"
            WHERE "is_active" AND "event_types" && %(patterns)s::varchar[]
        ), dead AS (
            SELECT d."id", d."tenant_id", d."endpoint_id", d."event_id",
                d."dead_letter_reason", d."dead_lettered_at",
                date_bin(%(window)s::interval, d."dead_lettered_at",
                         'epoch'::timestamptz) AS started
            FROM tenants AS t
            JOIN "{delivery}" AS d ON d."tenant_id" = t."tenant_id"
            JOIN "{event}" AS e ON e."id" = d."event_id"
            WHERE d."status" = %(dead)s
              AND d."dead_lettered_at" >= %(since)s
              AND d."dead_lettered_at" < %(until)s
              AND NOT starts_with(e."event_type", %(reserved)s)
        )
        SELECT DISTINCT ON (dead."endpoint_id", dead."started")
            dead."endpoint_id", dead."started", dead."tenant_id", ep."consumer",
            dead."id", dead."event_id", dead."dead_letter_reason",
            count(*) OVER w, min(dead."dead_lettered_at") OVER w,
            max(dead."dead_lettered_at") OVER w
        FROM dead JOIN "{endpoint}" AS ep ON ep."id" = dead."endpoint_id"
        -- a deleted endpoint's rows wait for their purge: nobody to tell
        WHERE ep."deleted_at" IS NULL
        WINDOW w AS (PARTITION BY dead."endpoint_id", dead."started")
        ORDER BY dead."endpoint_id", dead."started",
            dead."dead_lettered_at" DESC, dead."id" DESC
    """  # noqa: S608
