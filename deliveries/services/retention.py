"""Retention: events past their tenant's retention are deleted, in short batches.

An event is deleted once it is older than its tenant's `retention_days` (empty:
WEBHOOK_RETENTION_DAYS) and every delivery of it is final (`succeeded`,
`dead_letter` or `expired`; an event without deliveries counts as final),
together with its deliveries and their attempts. Each batch is one statement in
one short transaction over at most `batch` events of one tenant:

- the events are read oldest first within an id range (event ids are UUIDv7,
  so the cutoff is one), and `created_at` decides exactly;
- their final deliveries are locked FOR UPDATE SKIP LOCKED (the status checked
  again on the row's latest version), and an event is deleted only when every
  delivery it has is among them. A concurrent retry or replay
  (`delivery_requeue`, `dead_letters_replay`) that locked a delivery first
  keeps its event; one that comes second finds the delivery gone (404);
- `lock_timeout` bounds any other wait (e.g. behind the attempt-log cleanup
  deleting the same attempts): the batch gives up and the next run retries.

Tenants take turns, one batch each, so a tenant with a large backlog does not
hold back the others. A run stops after `budget` seconds; the next run goes on
where the rows are (nothing is remembered between runs).
"""

import functools
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg.errors
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from tenants.models import MAX_RETENTION_DAYS, Tenant
from webhooks_project import metrics
from webhooks_project.ids import CLOCK_SLACK, uuid7_floor

logger = logging.getLogger(__name__)

# Events per statement: with a fan-out of two, some 2,000 rows and their locks
# held for about 0.1 s (200,000 rows in 10 s on a busy 2-core machine).
PURGE_BATCH = 500
# Seconds one run may take: under the beat interval of `purge-expired-events`
# (settings.CELERY_BEAT_SCHEDULE), so that runs do not overlap.
PURGE_BUDGET = 240.0
# How long a batch waits for a lock it needs before giving up (it never waits
# behind hot rows: those are skipped), and how long its statement may run.
LOCK_TIMEOUT = "200ms"
STATEMENT_TIMEOUT = "30s"
# Errors after which a batch is given up for this run (the rows stay as they
# were): a lock or statement timeout, or a delivery added to an event being
# deleted.
_GIVE_UP = (
    psycopg.errors.LockNotAvailable,
    psycopg.errors.QueryCanceled,
    psycopg.errors.ForeignKeyViolation,
)
_BEFORE_EVERY_ID = uuid.UUID(int=0)


@dataclass
class PurgeResult:
    """What one run deleted, and whether it reached the end of every tenant."""

    events: int = 0
    deliveries: int = 0
    attempts: int = 0
    batches: int = 0
    finished: bool = False
    # Tenants whose batch gave up on a lock or statement timeout this run.
    gave_up: list = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows deleted in all three tables."""
        return self.events + self.deliveries + self.attempts


@dataclass
class _TenantCursor:
    """Where a tenant's purge stands in this run."""

    tenant_id: uuid.UUID
    cutoff: datetime
    after: uuid.UUID = _BEFORE_EVERY_ID

    @property
    def below(self) -> uuid.UUID:
        """Every id of an event created before `cutoff` sorts below this."""
        return uuid7_floor(self.cutoff, shift=CLOCK_SLACK)


def tenant_retention(tenant: Tenant) -> timedelta:
    """How long `tenant`'s events are kept."""
    days = tenant.retention_days or settings.WEBHOOK_RETENTION_DAYS
    return timedelta(days=min(days, MAX_RETENTION_DAYS))


def events_purge_expired(
    *,
    now: datetime | None = None,
    budget: float = PURGE_BUDGET,
    batch: int = PURGE_BATCH,
) -> PurgeResult:
    """Delete expired events whose deliveries are all final, with their
    deliveries and attempts, in batches, for at most `budget` seconds."""
    now = timezone.now() if now is None else now
    started = time.monotonic()
    cursors = [
        _TenantCursor(tenant_id=tenant.pk, cutoff=now - tenant_retention(tenant))
        for tenant in Tenant.objects.only("pk", "retention_days").order_by("pk")
    ]
    result = PurgeResult()
    while cursors and time.monotonic() - started < budget:
        for cursor in list(cursors):
            if time.monotonic() - started >= budget:
                break
            if not _purge_batch(cursor, batch=batch, result=result):
                cursors.remove(cursor)
    result.finished = not cursors
    elapsed = time.monotonic() - started
    if result.rows or result.gave_up:
        logger.info(
            "retention: deleted %d events, %d deliveries and %d attempts in %d "
            "batches, %.1f s (%s)",
            result.events,
            result.deliveries,
            result.attempts,
            result.batches,
            elapsed,
            "done" if result.finished else "more next run",
        )
    return result


def _purge_batch(cursor: _TenantCursor, *, batch: int, result: PurgeResult) -> bool:
    """One batch of `cursor`'s tenant; whether the tenant may have more."""
    params = {
        "tenant": cursor.tenant_id,
        "after": cursor.after,
        "below": cursor.below,
        "cutoff": cursor.cutoff,
        "batch": batch,
        "succeeded": DeliveryStatus.SUCCEEDED,
        "dead_letter": DeliveryStatus.DEAD_LETTER,
        "expired": DeliveryStatus.EXPIRED,
    }
    try:
        with transaction.atomic(), connection.cursor() as db:
            db.execute(
                "SELECT set_config('lock_timeout', %s, true), "
                "set_config('statement_timeout', %s, true)",
                [LOCK_TIMEOUT, STATEMENT_TIMEOUT],
            )
            db.execute(purge_sql(), params)
            scanned, last, events, deliveries, attempts = db.fetchone()
    except DatabaseError as exc:
        if not isinstance(exc.__cause__, _GIVE_UP):
            raise
        logger.warning(
            "retention: a batch of tenant %s gave up (%s); the next run retries",
            cursor.tenant_id,
            type(exc.__cause__).__name__,
            extra={"tenant_id": cursor.tenant_id},
        )
        result.gave_up.append(cursor.tenant_id)
        return False
    result.batches += 1
    result.events += events
    result.deliveries += deliveries
    result.attempts += attempts
    for kind, count in (
        ("events", events),
        ("deliveries", deliveries),
        ("attempts", attempts),
    ):
        if count:
            metrics.RETENTION_DELETED.labels(kind).inc(count)
    if scanned < batch:
        return False
    cursor.after = last
    return True


@functools.cache
def purge_sql() -> str:
    """One batch: the next `batch` expired events of a tenant, those whose
    deliveries are all final deleted with them and their attempts.

    Answers the events scanned, the last id scanned (where the next batch
    starts), and the events, deliveries and attempts deleted.
    """
    event = Event._meta.db_table
    delivery = Delivery._meta.db_table
    attempt = DeliveryAttempt._meta.db_table
    # Every lookup by id goes through `= ANY(array)` or a correlated count:
    # index probes whatever the table statistics say (a join would let the
    # planner pick a sequential scan of a table it thinks small).
    return f"""
        WITH scanned AS (
            SELECT ev."id" FROM "{event}" AS ev
            WHERE ev."tenant_id" = %(tenant)s
              AND ev."id" > %(after)s AND ev."id" < %(below)s
              AND ev."created_at" < %(cutoff)s
            ORDER BY ev."id"
            LIMIT %(batch)s
        ),
        locked AS (
            SELECT d."id", d."event_id" FROM "{delivery}" AS d
            WHERE d."event_id" = ANY((SELECT array_agg("id") FROM scanned)::uuid[])
              AND d."status" IN (%(succeeded)s, %(dead_letter)s, %(expired)s)
            FOR UPDATE SKIP LOCKED
        ),
        locked_per_event AS (
            SELECT "event_id", count(*) AS n FROM locked GROUP BY "event_id"
        ),
        doomed AS (
            SELECT s."id" FROM scanned AS s
            LEFT JOIN locked_per_event AS l ON l."event_id" = s."id"
            WHERE coalesce(l.n, 0) = (
                SELECT count(*) FROM "{delivery}" AS d WHERE d."event_id" = s."id")
        ),
        gone_deliveries AS (
            DELETE FROM "{delivery}" AS d
            WHERE d."id" = ANY((
                SELECT array_agg(l."id") FROM locked AS l
                WHERE l."event_id" IN (SELECT "id" FROM doomed))::uuid[])
            RETURNING d."id"
        ),
        gone_attempts AS (
            DELETE FROM "{attempt}" AS a
            WHERE a."delivery_id" = ANY(
                (SELECT array_agg("id") FROM gone_deliveries)::uuid[])
            RETURNING 1
        ),
        gone_events AS (
            DELETE FROM "{event}" AS ev
            WHERE ev."id" = ANY((SELECT array_agg("id") FROM doomed)::uuid[])
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM scanned),
               (SELECT "id" FROM scanned ORDER BY "id" DESC LIMIT 1),
               (SELECT count(*) FROM gone_events),
               (SELECT count(*) FROM gone_deliveries),
               (SELECT count(*) FROM gone_attempts)
    """  # noqa: S608
