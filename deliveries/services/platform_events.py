"""Operational events: what the platform publishes into a tenant's own stream.

`platform.endpoint.disabled` when the platform disables an endpoint (410 Gone,
failing too long), and `platform.delivery.dead_lettered`, a summary per
endpoint and minute of the deliveries that reached the dead-letter queue
(deliveries/services/dead_letter_events.py). They are stored and delivered
like any event, to the recipients `recipient_sql` names, and each carries an
idempotency key derived from what it is about, so a repeat never duplicates it.
"""

import functools
import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection, transaction
from django.utils import timezone

from deliveries.flow import refusals
from deliveries.leases import queued_lease
from deliveries.models import DeliveryStatus, Event
from deliveries.services.enqueue import deliveries_enqueue_on_commit
from deliveries.services.fanout_sql import fanout_insert_sql
from deliveries.services.ingest import request_fingerprint
from subscriptions.matching import RESERVED_PREFIX, payload_filter_sql
from subscriptions.models import Endpoint
from webhooks_project import metrics
from webhooks_project.ids import uuid7
from webhooks_project.rawsql import timestamptz_array, uuid_array

logger = logging.getLogger(__name__)

ENDPOINT_DISABLED = f"{RESERVED_PREFIX}endpoint.disabled"
DELIVERY_DEAD_LETTERED = f"{RESERVED_PREFIX}delivery.dead_lettered"


@dataclass(frozen=True)
class PlatformEvent:
    """One operational event to publish, about the endpoint its payload names."""

    tenant_id: object
    event_type: str
    # The consumer of the endpoint it is about (None: the producer's own).
    consumer: str | None
    # Always has `endpoint_id`: the endpoint the event is about.
    payload: dict
    # Derived from what the event is about: a repeat finds it taken.
    idempotency_key: str


def iso(moment: datetime) -> str:
    """A timestamp as payloads carry it: ISO 8601 in UTC with a `Z`."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def recipient_sql(*, ep: str, ev: str) -> str:
    """SQL true when endpoint `ep` receives platform event `ev` (table aliases).

    The one rule of who receives a platform event: an active endpoint of the
    same tenant whose `event_types` name the type exactly or by a
    `prefix.*` wildcard (a `*` or empty filter does not: those endpoints
    never asked for platform events), never the endpoint the event is about,
    and only one without a consumer (the producer's own) or of the consumer
    the event is about, so that no consumer learns of another's endpoints;
    and, like any event, one whose payload filter the payload passes.
    `ev` needs the columns tenant_id, event_type, consumer and payload.
    """
    # Aliases are the callers' literals; no value is interpolated.
    return f"""
        {ep}."tenant_id" = {ev}."tenant_id" AND {ep}."is_active"
        AND {ep}."id"::text IS DISTINCT FROM ({ev}."payload" ->> 'endpoint_id')
        AND ({ep}."consumer" IS NULL OR {ep}."consumer" = {ev}."consumer")
        AND EXISTS (
            SELECT 1 FROM unnest({ep}."event_types") AS p(pattern)
            WHERE p.pattern = {ev}."event_type"
               OR (right(p.pattern, 2) = '.*'
                   AND starts_with({ev}."event_type", left(p.pattern, -1))))
        AND {payload_filter_sql(endpoint=ep, payload=f'{ev}."payload"', wanted="true")}
    """  # noqa: S608


def platform_events_publish(*, events: list[PlatformEvent]) -> int:
    """Store `events` with their fan-out in one statement; return how many were new.

    An event nobody would receive is not stored (a tenant without platform
    subscribers gets no noise in its stream), nor one whose idempotency key
    is taken (published before: a repeat, a second beat, a retried run).
    Deliveries are published after commit; those of endpoints refusing every
    delivery wait in PostgreSQL, as ingestion does.
    """
    if not events:
        return 0
    held: dict[str, datetime] = {}
    for tenant_id in {event.tenant_id for event in events}:
        held.update(refusals.refusing_for_tenant(tenant_id))
    now = timezone.now()
    items = [
        {
            "id": str(uuid7()),
            "tenant_id": str(event.tenant_id),
            "event_type": event.event_type,
            "consumer": event.consumer,
            "payload": event.payload,
            "idempotency_key": event.idempotency_key,
            "request_hash": request_fingerprint(
                event_type=event.event_type,
                payload=event.payload,
                consumer=event.consumer,
            ),
        }
        for event in events
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _publish_sql(),
            {
                "items": json.dumps(items, ensure_ascii=False),
                "now": now,
                "lease": queued_lease(now),
                "pending": DeliveryStatus.PENDING,
                "held": uuid_array(held),
                "until": timestamptz_array(held.values()),
            },
        )
        types, deliveries, held_count = cursor.fetchone()
        deliveries_enqueue_on_commit(deliveries)
        transaction.on_commit(functools.partial(_count, types, held_count))
    if types:
        logger.info(
            "%d platform events published (%s), %d deliveries",
            len(types),
            ", ".join(sorted(set(types))),
            len(deliveries) + held_count,
        )
    return len(types)


def platform_endpoint_disabled(*, endpoint_id) -> bool:
    """Publish `platform.endpoint.disabled` for an endpoint the platform disabled.

    Called in the transaction that disabled it (endpoint_deactivate), so the
    event exists exactly when the disable does. Its key is the endpoint and
    the moment it was disabled: one event per disable. True when published
    (False: no recipient, or published before).
    """
    endpoint = Endpoint.objects.values(
        "tenant_id", "url", "consumer", "disabled_reason", "disabled_at"
    ).get(pk=endpoint_id)
    disabled_at = endpoint["disabled_at"]
    payload = {
        "endpoint_id": str(endpoint_id),
        "url": endpoint["url"],
        "reason": endpoint["disabled_reason"],
        "consumer": endpoint["consumer"],
        "disabled_at": iso(disabled_at),
    }
    key = f"{ENDPOINT_DISABLED}:{endpoint_id}:{disabled_at.timestamp():.6f}"
    event = PlatformEvent(
        tenant_id=endpoint["tenant_id"],
        event_type=ENDPOINT_DISABLED,
        consumer=endpoint["consumer"],
        payload=payload,
        idempotency_key=key,
    )
    return platform_events_publish(events=[event]) == 1


def _count(types: list[str], held_count: int) -> None:
    for event_type, count in Counter(types).items():
        metrics.PLATFORM_EVENTS.labels(type=event_type).inc(count)
    if held_count:
        metrics.DELIVERIES_POSTPONED.labels(reason="held").inc(held_count)


@functools.cache
def _publish_sql() -> str:
    event, endpoint = Event._meta.db_table, Endpoint._meta.db_table
    # The ingestion's INSERT, with this rule's recipients.
    fanout = fanout_insert_sql(
        source=f'ev JOIN "{endpoint}" AS ep ON {recipient_sql(ep="ep", ev="ev")}',
        condition="true",
    )
    # Identifiers come from the models' metadata; every value is a parameter.
    return f"""
        WITH items AS (
            SELECT * FROM jsonb_to_recordset(%(items)s::jsonb) AS i(
                "id" uuid, "tenant_id" uuid, "event_type" varchar,
                "consumer" varchar, "payload" jsonb, "idempotency_key" varchar,
                "request_hash" varchar)
        ), ev AS (
            INSERT INTO "{event}" ("id", "tenant_id", "event_type", "consumer",
                "payload", "idempotency_key", "request_hash", "created_at")
            SELECT i."id", i."tenant_id", i."event_type", i."consumer",
                i."payload", i."idempotency_key", i."request_hash", %(now)s
            FROM items AS i
            WHERE EXISTS (
                SELECT 1 FROM "{endpoint}" AS ep
                WHERE {recipient_sql(ep="ep", ev="i")})
            ON CONFLICT ("tenant_id", "idempotency_key")
                WHERE "idempotency_key" IS NOT NULL DO NOTHING
            RETURNING "id", "tenant_id", "event_type", "consumer", "payload",
                "expires_at"
        ), fanout AS ({fanout})
        SELECT ARRAY(SELECT "event_type" FROM ev),
               ARRAY(SELECT ARRAY["id"::text, "endpoint_id"::text] FROM fanout
                     WHERE NOT postponed),
               (SELECT count(*) FROM fanout WHERE postponed)
    """  # noqa: S608
