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
import threading
import time
import uuid
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from deliveries.flow import gate
from deliveries.models import Delivery, DeliveryStatus
from subscriptions.models import Endpoint
from webhooks_project import metrics
from webhooks_project.rawsql import timestamptz_array, uuid_array

# How long a process trusts its copy of the refusing endpoints, in seconds: a
# refusal that ended meanwhile holds a new delivery until it would have ended.
HELD_CACHE_SECONDS = 1.0


class _HeldEndpoints:
    """This process's copy of the refusing endpoints, by tenant."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._by_tenant: dict[str, dict[str, datetime]] = {}

    def for_tenant(self, tenant_id) -> dict[str, datetime]:
        if time.monotonic() - self._read_at >= HELD_CACHE_SECONDS:
            with self._lock:
                if time.monotonic() - self._read_at >= HELD_CACHE_SECONDS:
                    self._by_tenant = _refusing_by_tenant()
                    self._read_at = time.monotonic()
        return self._by_tenant.get(str(tenant_id), {})

    def forget(self) -> None:
        with self._lock:
            self._read_at = float("-inf")


_held = _HeldEndpoints()


def held_endpoints(*, tenant_id) -> dict[str, datetime]:
    """The tenant's endpoints that refuse every delivery, and until when.

    A copy at most HELD_CACHE_SECONDS old: ingestion asks on every event.
    """
    return _held.for_tenant(tenant_id)


def held_endpoints_forget() -> None:
    """Read the refusing endpoints again on the next ask (after a reset)."""
    _held.forget()


def _refusing_by_tenant() -> dict[str, dict[str, datetime]]:
    refusing = gate.refusing_endpoints()
    ids = []
    for endpoint_id in refusing:
        try:
            ids.append(uuid.UUID(endpoint_id))
        except ValueError:
            continue  # not one of ours
    by_tenant: dict[str, dict[str, datetime]] = {}
    if ids:
        owners = Endpoint.objects.filter(pk__in=ids).values_list("pk", "tenant_id")
        for endpoint_id, tenant_id in owners:
            until = refusing[str(endpoint_id)]
            by_tenant.setdefault(str(tenant_id), {})[str(endpoint_id)] = until
    return by_tenant


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
