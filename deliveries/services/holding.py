"""Deliveries of endpoints that refuse everything wait in PostgreSQL, unpublished.

Every worker consumes the same queue: a message of an endpoint whose circuit is
open, that its receiver paused (Retry-After) or whose requests hang would be
received, put off and acknowledged only to come back later, and the broker and
workers would spend on it what the healthy endpoints need. Flow control lists
such endpoints with the time their refusal ends (`gate.REFUSING_SET`).
Ingestion writes their new deliveries due then, with no message (lease = due
time, as a long retry); the sweep moves their due rows on in one statement
instead of publishing them, and publishes them as usual once the refusal ended.
"""

import functools
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus
from webhooks_project import metrics
from webhooks_project.rawsql import timestamptz_array, uuid_array


def deliveries_hold(*, until: dict[str, datetime], keep=()) -> list:
    """Move the due open deliveries of refusing endpoints on to `until[endpoint]`.

    For the sweep: every row of those endpoints whose lease has passed, not only
    the sweep's batch, so that a dead endpoint's backlog comes up once per
    refusal rather than a batch at a time; the ids in `keep` stay as they are.
    Rows of a worker that died go back to pending. Rows another transaction
    holds are skipped (the next sweep sees them). Returns the ids moved.
    """
    if not until:
        return []
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            _hold_sql(),
            {
                "endpoints": uuid_array(until),
                "until": timestamptz_array(until.values()),
                "keep": uuid_array(keep),
                "now": now,
                "pending": DeliveryStatus.PENDING,
                "in_progress": DeliveryStatus.IN_PROGRESS,
                "failed": DeliveryStatus.FAILED,
            },
        )
        moved = [row[0] for row in cursor.fetchall()]
    if moved:
        held_metric = metrics.DELIVERIES_POSTPONED.labels(reason="held")
        transaction.on_commit(lambda: held_metric.inc(len(moved)))
    return moved


@functools.cache
def _hold_sql() -> str:
    # Identifiers come from the model's metadata; every value is a parameter.
    # The inner select finds the rows through the open-lease partial index.
    table = Delivery._meta.db_table
    return f"""
        UPDATE "{table}" AS d
        SET "status" = CASE WHEN d."status" = %(in_progress)s THEN %(pending)s
                            ELSE d."status" END,
            "next_attempt_at" = s.until, "lease_expires_at" = s.until,
            "updated_at" = %(now)s
        FROM (
            SELECT o."id", h.until
            FROM "{table}" AS o
            JOIN unnest(%(endpoints)s::uuid[], %(until)s::timestamptz[])
                AS h(endpoint_id, until) ON o."endpoint_id" = h.endpoint_id
            WHERE o."status" IN (%(pending)s, %(in_progress)s, %(failed)s)
              AND o."lease_expires_at" <= %(now)s
              AND NOT o."id" = ANY(%(keep)s::uuid[])
            FOR UPDATE OF o SKIP LOCKED
        ) AS s
        WHERE d."id" = s."id"
        RETURNING d."id"
    """  # noqa: S608
