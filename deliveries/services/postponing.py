"""Postponing deliveries: every statement that moves a delivery's next attempt on.

Where a delivery waits is decided in deliveries.services.scheduling
(`wait_place`); the rows here keep the lease that says whether a message of
theirs may exist (deliveries/leases.py):
- `deliveries_postpone`: claimed deliveries flow control refused (an attempt
  not made, none spent);
- `deliveries_postpone_unclaimed`: deliveries of an endpoint that refuses every
  delivery, whose messages a worker took without claiming them;
- `deliveries_postpone_refusing`: the sweep's due rows of such endpoints;
- `deliveries_postpone_queued`: the queued rows of an endpoint whose own queue a
  worker paused (their messages wait there).
Ingestion writes the new deliveries of a refusing endpoint postponed already
(deliveries.services.ingest).
"""

import functools
import logging
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from deliveries.leases import queued_lease
from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.ordering import lines_release
from deliveries.services.scheduling import AttemptDecision, set_next_attempt
from webhooks_project import metrics
from webhooks_project.rawsql import (
    not_by_index,
    prepared,
    timestamptz_array,
    uuid_array,
)

logger = logging.getLogger(__name__)


def deliveries_postpone(
    *, items: list[tuple[Delivery, float, str]]
) -> list[AttemptDecision]:
    """Postpone claimed deliveries without spending an attempt, in one statement.

    `items` are (delivery, seconds to wait, flow-control reason) triples; each
    waits where `wait_place` says (the lot's were refused room there).
    """
    if not items:
        return []
    now = timezone.now()
    decisions = []
    for delivery, wait, reason in items:
        delivery.status = (
            DeliveryStatus.FAILED if delivery.attempt_count else DeliveryStatus.PENDING
        )
        countdown = set_next_attempt(delivery, delay=wait, now=now, reason=reason)
        decisions.append(
            AttemptDecision(
                attempted=False,
                status=delivery.status,
                retry_in=countdown,
                postponed=reason,
            )
        )
        metrics.DELIVERIES_POSTPONED.labels(reason=reason).inc()
        if reason == "rate_limited":
            metrics.RATE_LIMIT_HITS.labels(scope="endpoint").inc()
        logger.debug("delivery %s postponed %.1f s: %s", delivery.pk, wait, reason)
    deliveries = [item[0] for item in items]
    with connection.cursor() as cursor:
        cursor.execute(
            _postpone_sql(),
            {
                "ids": [str(delivery.pk) for delivery in deliveries],
                "statuses": [delivery.status for delivery in deliveries],
                "due": [delivery.next_attempt_at for delivery in deliveries],
                "leases": [delivery.lease_expires_at for delivery in deliveries],
                "now": now,
            },
        )
    # No longer in progress, they no longer hold their lines.
    lines_release({(d.endpoint_id, d.ordering_key) for d in deliveries})
    return decisions


@functools.cache
def _postpone_sql() -> str:
    # Identifiers come from the model's metadata; every value is a parameter.
    return f"""
        UPDATE "{Delivery._meta.db_table}" AS d
        SET "status" = v.status, "next_attempt_at" = v.due,
            "lease_expires_at" = v.lease, "updated_at" = %(now)s
        FROM unnest(
            %(ids)s::uuid[], %(statuses)s::text[], %(due)s::timestamptz[],
            %(leases)s::timestamptz[]
        ) AS v(id, status, due, lease)
        WHERE d."id" = v.id
    """  # noqa: S608


def deliveries_postpone_unclaimed(*, delivery_ids: list, due, reason: str) -> int:
    """Postpone deliveries whose messages a worker took, without claiming them.

    For deliveries of an endpoint that refuses every delivery: they wait in
    PostgreSQL until `due` (waiting leases), and the sweep publishes them then.
    Deliveries held by a worker, final ones, and ones already due later are
    left as they are. Returns how many moved.

    A message of a hanging endpoint costs this statement's share and nothing
    else: prepared, one array literal for the ids.
    """
    with prepared(
        _postpone_unclaimed_sql(),
        {
            "ids": uuid_array(delivery_ids),
            "due": max(due, timezone.now()),
            "now": timezone.now(),
            "pending": DeliveryStatus.PENDING,
            "failed": DeliveryStatus.FAILED,
        },
    ) as cursor:
        moved = cursor.rowcount
    metrics.DELIVERIES_POSTPONED.labels(reason=reason).inc(len(delivery_ids))
    return moved


@functools.cache
def _postpone_unclaimed_sql() -> str:
    # Identifiers come from the model's metadata; every value is a parameter.
    # Waiting leases: lease = due time.
    return f"""
        UPDATE "{Delivery._meta.db_table}" AS d
        SET "next_attempt_at" = GREATEST(COALESCE(d."next_attempt_at", %(due)s),
                                         %(due)s),
            "lease_expires_at" = GREATEST(COALESCE(d."next_attempt_at", %(due)s),
                                          %(due)s),
            "updated_at" = %(now)s
        WHERE d."id" = ANY(%(ids)s::uuid[])
          AND {not_by_index('d."status" IN (%(pending)s, %(failed)s)')}
    """  # noqa: S608


def deliveries_postpone_refusing(*, until: dict[str, datetime], keep=()) -> list:
    """Postpone the due open deliveries of refusing endpoints to `until[endpoint]`.

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
            _postpone_refusing_sql(),
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
def _postpone_refusing_sql() -> str:
    # Identifiers come from the model's metadata; every value is a parameter.
    # The inner select finds the rows through the open-lease partial index.
    table = Delivery._meta.db_table
    # Waiting leases: lease = due time.
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


def deliveries_postpone_queued(*, endpoint_id, within: float) -> int:
    """Postpone the sweep of an endpoint's queued deliveries whose leases pass soon.

    For an endpoint whose own queue a worker stopped reading while it refuses
    deliveries or has no room (deliveries/flow/worker_queues.py): its messages
    wait in RabbitMQ, and the sweep must not publish them a second time
    meanwhile. Queued leases that pass within `within` seconds become full
    queued leases again; waiting rows (no message) are left alone. Returns how
    many moved.
    """
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            _postpone_queued_sql(),
            {
                "endpoint": endpoint_id,
                "pending": DeliveryStatus.PENDING,
                "now": now,
                "soon": now + timedelta(seconds=within),
                "lease": queued_lease(now),
            },
        )
        return cursor.rowcount


@functools.cache
def _postpone_queued_sql() -> str:
    # Identifiers come from the model's metadata; every value is a parameter.
    # The range on the lease uses the partial index of open leases.
    return f"""
        UPDATE "{Delivery._meta.db_table}" AS d
        SET "lease_expires_at" = %(lease)s, "updated_at" = %(now)s
        WHERE d."status" = %(pending)s
          AND d."lease_expires_at" > %(now)s AND d."lease_expires_at" <= %(soon)s
          AND d."endpoint_id" = %(endpoint)s
          AND (d."next_attempt_at" IS NULL OR d."next_attempt_at" <= %(now)s)
    """  # noqa: S608
