"""An endpoint's delivery statistics over a time window, in one bounded statement."""

import functools
from datetime import UTC, datetime, timedelta

from django.db import connection

from deliveries.flow import gate
from deliveries.models import AttemptOutcome, Delivery, DeliveryAttempt, DeliveryStatus
from subscriptions.models import Endpoint
from webhooks_project.ids import CLOCK_SLACK, uuid7_floor

# The newest deliveries of a window that are read; past it the answer says
# `sampled` (a window of an endpoint taking millions stays one bounded read).
STATS_MAX_DELIVERIES = 100_000
# Windows up to this long have hourly buckets; longer ones daily.
HOURLY_UP_TO = timedelta(hours=72)
# The longest window asked for at once.
MAX_WINDOW = timedelta(days=31)

_HOUR, _DAY = timedelta(hours=1), timedelta(days=1)


def endpoint_stats(
    *,
    endpoint: Endpoint,
    since: datetime,
    until: datetime,
    max_deliveries: int = STATS_MAX_DELIVERIES,
) -> dict:
    """Counts, success rate, durations and a time series of `endpoint`'s traffic.

    Scope: the endpoint's deliveries created in [since, until) (the newest
    `max_deliveries` of them; `sampled` is true when there were more), and
    their attempts started in the window. `deliveries` counts them by current
    status, `attempts` by outcome; `series` buckets the attempts by the UTC
    hour they started in (by day for windows over 72 hours), one entry per
    bucket of the window, empty ones included. One SQL statement, on the
    (endpoint, -id) index of deliveries and the (delivery, number) index of
    attempts; the circuit comes from Redis.
    """
    step = _HOUR if until - since <= HOURLY_UP_TO else _DAY
    params = {
        "endpoint": endpoint.pk,
        "since": since,
        "until": until,
        "low": uuid7_floor(since, shift=-CLOCK_SLACK),
        "high": uuid7_floor(until, shift=CLOCK_SLACK),
        "cap": max_deliveries,
        "success": AttemptOutcome.SUCCESS,
        "step": "hour" if step == _HOUR else "day",
    }
    with connection.cursor() as cursor:
        cursor.execute(stats_sql(), params)
        (sampled, statuses, outcomes, p50, p95, last_success, last_failure, rows) = (
            cursor.fetchone()
        )
    by_status = dict.fromkeys(DeliveryStatus.values, 0)
    by_status.update({status: int(n) for status, n in statuses})
    by_outcome = dict.fromkeys(AttemptOutcome.values, 0)
    by_outcome.update({outcome: int(n) for outcome, n in outcomes})
    total = sum(by_outcome.values())
    succeeded = by_outcome[AttemptOutcome.SUCCESS]
    return {
        "since": since,
        "until": until,
        "sampled": sampled,
        "deliveries": by_status,
        "attempts": by_outcome,
        "attempts_total": total,
        "success_rate": succeeded / total if total else None,
        "duration_ms": {"p50": p50, "p95": p95},
        "last_success_at": last_success,
        "last_failure_at": last_failure,
        "circuit": gate.circuit(endpoint.pk),
        "series": _series(since=since, until=until, step=step, rows=rows),
    }


def _series(
    *, since: datetime, until: datetime, step: timedelta, rows: list
) -> list[dict]:
    """Every bucket of the window, oldest first, with the attempts it had."""
    found = {int(start): (attempts, ok, p50) for start, attempts, ok, p50 in rows}
    first = _floor(since, step)
    # Counted, not stepped past `until`: a window ending in 9999 cannot overflow.
    count = -((first - until) // step)
    series = []
    for index in range(count):
        start = first + index * step
        attempts, ok, p50 = found.get(int(start.timestamp()), (0, 0, None))
        series.append(
            {
                "start": start,
                "attempts": attempts,
                "succeeded": ok,
                "failed": attempts - ok,
                "p50_ms": p50,
            }
        )
    return series


def _floor(moment: datetime, step: timedelta) -> datetime:
    """The start of the UTC hour or day of `moment` (as PostgreSQL's date_trunc)."""
    moment = moment.astimezone(UTC)
    if step == _DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


@functools.cache
def stats_sql() -> str:
    """The whole answer in one statement: the window's newest deliveries (up to
    the cap) and their attempts, each read once and aggregated several ways."""
    delivery, attempt = Delivery._meta.db_table, DeliveryAttempt._meta.db_table
    return f"""
        WITH d AS MATERIALIZED (
            SELECT "id", "status" FROM "{delivery}"
            WHERE "endpoint_id" = %(endpoint)s
              AND "id" >= %(low)s AND "id" < %(high)s
              AND "created_at" >= %(since)s AND "created_at" < %(until)s
            ORDER BY "id" DESC
            LIMIT %(cap)s
        ), a AS MATERIALIZED (
            SELECT att."outcome", att."duration_ms", att."started_at"
            FROM d JOIN "{attempt}" AS att ON att."delivery_id" = d."id"
            WHERE att."started_at" >= %(since)s AND att."started_at" < %(until)s
        )
        SELECT
            -- more of the window below the oldest one read: only when capped
            CASE WHEN (SELECT count(*) FROM d) >= %(cap)s THEN EXISTS (
                SELECT 1 FROM "{delivery}" AS more
                WHERE more."endpoint_id" = %(endpoint)s
                  AND more."id" >= %(low)s
                  AND more."id" < (SELECT "id" FROM d ORDER BY "id" LIMIT 1)
                  AND more."created_at" >= %(since)s
                  AND more."created_at" < %(until)s
            ) ELSE false END,
            ARRAY(SELECT ARRAY["status", count(*)::text] FROM d GROUP BY "status"),
            ARRAY(SELECT ARRAY["outcome", count(*)::text] FROM a GROUP BY "outcome"),
            (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY "duration_ms")
             FROM a),
            (SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY "duration_ms")
             FROM a),
            (SELECT max("started_at") FROM a WHERE "outcome" = %(success)s),
            (SELECT max("started_at") FROM a WHERE "outcome" <> %(success)s),
            ARRAY(
                SELECT ARRAY[extract(epoch FROM b."start")::bigint, b."attempts",
                             b."succeeded", b."p50"]
                FROM (
                    SELECT date_trunc(%(step)s, "started_at") AS "start",
                           count(*) AS "attempts",
                           count(*) FILTER (WHERE "outcome" = %(success)s)
                               AS "succeeded",
                           percentile_disc(0.5) WITHIN GROUP
                               (ORDER BY "duration_ms") AS "p50"
                    FROM a GROUP BY 1
                ) AS b
            )
    """  # noqa: S608
