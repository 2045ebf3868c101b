"""Claiming deliveries: one round trip moves them to in_progress and loads their world.

`UPDATE ... RETURNING` in a CTE, joined to the events, the endpoints and the
endpoints' secrets: an attempt needs all of them, and three queries (claim,
select with joins, prefetch of secrets) cost three round trips per delivery. One
statement claims a whole batch (`id = ANY(...)`), as the delivery engine does.
"""

import contextlib
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from deliveries.leases import attempt_lease
from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.services.ordering import ahead_sql, deliveries_park
from subscriptions.encryption import decrypt
from subscriptions.models import Endpoint, EndpointSecret
from webhooks_project.rawsql import (
    columns,
    instance,
    not_by_index,
    prepared,
    uuid_array,
    width,
)

# A message may arrive a little before the stored due time (clock skew).
DUE_TOLERANCE = timedelta(seconds=2)
_SECRET_FIELDS = ("id", "secret", "created_at", "expires_at")


def _claim_sql(*, unkeyed: bool = False) -> str:
    delivery = Delivery._meta.db_table
    secrets = ", ".join(
        f'array_agg(s."{name}" ORDER BY s."id") AS "{name}"' for name in _SECRET_FIELDS
    )
    picked = ", ".join(f"sec.{name}" for name in _SECRET_FIELDS)
    # Not claimed past its expiry: the sweep settles it as expired; nor while
    # a delivery of its line must go first (ordering).
    ready = f"""
        ((d."status" IN (%(pending)s, %(failed)s)
          AND (d."next_attempt_at" IS NULL OR d."next_attempt_at" <= %(due)s))
         OR (d."status" = %(in_progress)s AND d."lease_expires_at" < %(now)s))
        AND (d."expires_at" IS NULL OR d."expires_at" > %(now)s)
        AND NOT {ahead_sql("d")}"""
    if unkeyed:
        ready += ' AND d."ordering_key" IS NULL'
    # Identifiers come from the models' metadata; every value is a parameter.
    return f"""
        WITH claimed AS (
            UPDATE "{delivery}" AS d
            SET "status" = %(in_progress)s, "lease_expires_at" = %(lease)s,
                "parked_at" = NULL, "updated_at" = %(now)s
            WHERE d."id" = ANY(%(ids)s::uuid[]) AND {not_by_index(ready)}
            RETURNING d.*
        )
        SELECT {columns(Delivery, "c")}, {columns(Event, "e")},
               {columns(Endpoint, "ep")}, {picked}
        FROM claimed AS c
        JOIN "{Event._meta.db_table}" AS e ON e."id" = c."event_id"
        JOIN "{Endpoint._meta.db_table}" AS ep ON ep."id" = c."endpoint_id"
        LEFT JOIN LATERAL (
            SELECT {secrets} FROM "{EndpointSecret._meta.db_table}" AS s
            WHERE s."endpoint_id" = ep."id"
              AND (s."expires_at" IS NULL OR s."expires_at" > %(now)s)
        ) AS sec ON true
    """  # noqa: S608


_SQL = _claim_sql()
_UNKEYED_SQL = _claim_sql(unkeyed=True)


def deliveries_claim(*, delivery_ids: list) -> list[Delivery]:
    """Claim every due delivery of `delivery_ids` that nobody holds, in one statement.

    Final deliveries, deliveries held by a live worker, deliveries not yet due
    and deliveries past their expiry are left out; so are keyed deliveries
    with one of their line ahead, which are parked (ordering). Each one comes
    with its event, endpoint and secrets loaded.
    """
    if not delivery_ids:
        return []
    # The keyed deliveries of a batch may race other claims of their lines
    # (the unique index delivery_line_in_progress fails the statement): run
    # again, the check then sees the other claim; should that race again, the
    # unkeyed ones are claimed and the keyed ones parked (their lines go on
    # when the other attempt ends).
    for sql in (_SQL, _SQL, _UNKEYED_SQL):
        now = timezone.now()
        due = now + DUE_TOLERANCE
        try:
            rows = _claimed_rows(sql, delivery_ids, now=now, due=due)
            break
        except IntegrityError:
            if sql is _UNKEYED_SQL:
                raise
    claimed = _deliveries(rows)
    if len(claimed) < len(delivery_ids):
        # Those claimed are in progress: the parking leaves them alone.
        deliveries_park(delivery_ids=delivery_ids, due=due)
    return claimed


def _claimed_rows(sql: str, delivery_ids: list, *, now, due) -> list:
    """Run the claim (in a savepoint inside a transaction: it may fail)."""
    params = {
        "ids": uuid_array(delivery_ids),
        "now": now,
        "due": due,
        "lease": attempt_lease(now),
        "pending": DeliveryStatus.PENDING,
        "failed": DeliveryStatus.FAILED,
        "in_progress": DeliveryStatus.IN_PROGRESS,
    }
    inside = connection.in_atomic_block
    with (
        transaction.atomic() if inside else contextlib.nullcontext(),
        prepared(sql, params) as cursor,
    ):
        return cursor.fetchall()


def _deliveries(rows: list) -> list[Delivery]:
    """Instances from the claim's rows; one event and endpoint object per id.

    A batch holds each event once per endpoint and each endpoint many times:
    building them once per id is most of the statement's Python cost saved, and
    deliveries of one endpoint share its object, as a prefetch would.
    """
    d_width, e_width, ep_width = (width(model) for model in (Delivery, Event, Endpoint))
    e_end = d_width + e_width
    ep_end = e_end + ep_width
    db = connection.alias
    events: dict = {}
    endpoints: dict = {}
    claimed = []
    for row in rows:
        delivery = instance(Delivery, row[:d_width], db=db)
        event = events.get(delivery.event_id)
        if event is None:
            event = instance(Event, row[d_width:e_end], db=db)
            events[delivery.event_id] = event
        endpoint = endpoints.get(delivery.endpoint_id)
        if endpoint is None:
            endpoint = _endpoint(row[e_end:ep_end], row[ep_end:])
            endpoints[delivery.endpoint_id] = endpoint
        # What `delivery.event = event` leaves, without the descriptor's checks
        # (the ids already match: they come from the same row).
        delivery._state.fields_cache.update(event=event, endpoint=endpoint)
        claimed.append(delivery)
    return claimed


def _endpoint(values, secret_columns) -> Endpoint:
    """An endpoint with its secrets in the prefetch cache."""
    endpoint = instance(Endpoint, values)
    secrets = [
        EndpointSecret(
            endpoint=endpoint,
            id=secret_id,
            secret=decrypt(stored),  # the column as stored: a Fernet token
            created_at=created_at,
            expires_at=expires_at,
        )
        for secret_id, stored, created_at, expires_at in zip(
            *(column or [] for column in secret_columns), strict=True
        )
    ]
    for secret in secrets:
        secret._state.adding, secret._state.db = False, connection.alias
    # As prefetch_related("endpoint__secrets") would leave them (a bare QuerySet:
    # building a filtered one per row cost more than the rest of the claim).
    cached = QuerySet(model=EndpointSecret)
    cached._result_cache, cached._prefetch_done = secrets, True
    endpoint._prefetched_objects_cache = {"secrets": cached}
    return endpoint
