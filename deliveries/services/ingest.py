"""Ingestion: store the event once and write its fan-out in one statement."""

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from deliveries.flow import refusals
from deliveries.leases import queued_lease
from deliveries.models import DeliveryStatus, Event
from deliveries.services.enqueue import deliveries_enqueue_on_commit
from deliveries.services.fanout_sql import endpoint_matches_sql, fanout_insert_sql
from deliveries.services.ordering import sequence_sql
from subscriptions.matching import patterns_matching
from subscriptions.models import Endpoint
from tenants.models import Tenant
from webhooks_project import metrics
from webhooks_project.rawsql import prepared, timestamptz_array, uuid_array

logger = logging.getLogger(__name__)


class IdempotencyConflict(Exception):
    """An idempotency key was reused with a different request body."""


@dataclass(frozen=True)
class IngestResult:
    """The stored event, whether this call created it, and its fan-out size."""

    event: Event
    created: bool
    deliveries: int


def request_fingerprint(
    *,
    event_type: str,
    payload: dict,
    consumer: str | None = None,
    ordering_key: str | None = None,
) -> str:
    """SHA-256 of the canonical request, to compare repeats of one key.

    Without a consumer and an ordering key it is what it always was, so keys
    stored before those existed still recognise their repeats.
    """
    request = {"event_type": event_type, "payload": payload}
    if consumer is not None:
        request["consumer"] = consumer
    if ordering_key is not None:
        request["ordering_key"] = ordering_key
    canonical = json.dumps(
        request,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def event_ingest(
    *,
    tenant: Tenant,
    event_type: str,
    payload: dict,
    idempotency_key: str | None = None,
    consumer: str | None = None,
    expires_at: datetime | None = None,
    ordering_key: str | None = None,
) -> IngestResult:
    """Accept an event: one Event, one Delivery per matching endpoint, tasks on commit.

    One statement writes the event and its whole fan-out (atomic by itself, so
    no transaction round trips). A repeated idempotency key returns the original
    event and creates nothing; the same key with another body raises
    IdempotencyConflict. With a `consumer`, only that consumer's endpoints get it;
    with `expires_at`, deliveries not made by then are settled as expired; with
    an `ordering_key`, each endpoint gets the key's events one at a time, in
    acceptance order (deliveries.services.ordering).
    """
    fingerprint = request_fingerprint(
        event_type=event_type,
        payload=payload,
        consumer=consumer,
        ordering_key=ordering_key,
    )
    # Endpoints refusing every delivery get theirs postponed to when that ends,
    # unpublished (waiting leases).
    held = refusals.refusing_for_tenant(tenant.pk)
    now = timezone.now()
    event = Event(
        tenant=tenant,
        event_type=event_type,
        consumer=consumer,
        payload=payload,
        idempotency_key=idempotency_key or None,
        request_hash=fingerprint,
        expires_at=expires_at,
        ordering_key=ordering_key,
        created_at=now,
    )
    with prepared(
        _ingest_sql(for_consumer=consumer is not None),
        {
            "id": event.pk,
            "tenant": tenant.pk,
            "event_type": event_type,
            "consumer": consumer,
            "payload": json.dumps(payload, ensure_ascii=False),
            "key": event.idempotency_key,
            "hash": fingerprint,
            "expires_at": expires_at,
            "ordering_key": ordering_key,
            "now": now,
            "lease": queued_lease(now),
            "pending": DeliveryStatus.PENDING,
            "patterns": patterns_matching(event_type),
            "held": uuid_array(held),
            "until": timestamptz_array(held.values()),
        },
    ) as cursor:
        created, deliveries, held_count = cursor.fetchone()
    if not created:
        # This key was used before (or by a concurrent request that won).
        existing = Event.objects.get(tenant=tenant, idempotency_key=idempotency_key)
        return _repeat(existing, fingerprint)
    event._state.adding = False
    deliveries_enqueue_on_commit(deliveries)
    if held_count:
        held_metric = metrics.DELIVERIES_POSTPONED.labels(reason="held")
        transaction.on_commit(lambda: held_metric.inc(held_count))
    transaction.on_commit(metrics.EVENTS_INGESTED.inc)
    logger.info(
        "event %s accepted: %s, %d deliveries",
        event.pk,
        event_type,
        len(deliveries) + held_count,
        extra={
            "tenant_id": tenant.pk,
            "event_id": event.pk,
            "event_type": event_type,
            "deliveries": len(deliveries) + held_count,
        },
    )
    return IngestResult(
        event=event, created=True, deliveries=len(deliveries) + held_count
    )


@functools.cache
def _ingest_sql(*, for_consumer: bool) -> str:
    event, endpoint = Event._meta.db_table, Endpoint._meta.db_table
    # An event for one consumer has a statement of its own, so that even its
    # generic (prepared) plan reads only that consumer's endpoints through the
    # partial endpoint_tenant_consumer index (a deleted endpoint is inactive
    # too: saying so matches the index's condition).
    consumer = (
        'AND ep."consumer" = %(consumer)s AND ep."deleted_at" IS NULL'
        if for_consumer
        else ""
    )
    fanout = fanout_insert_sql(
        source=f'ev CROSS JOIN "{endpoint}" AS ep',
        condition=endpoint_matches_sql(
            patterns="%(patterns)s::varchar[]",
            payload="%(payload)s::jsonb",
            consumer=consumer,
        ),
        ordering_key='ev."ordering_key"',
        sequence='ev."sequence"',
    )
    # Identifiers come from the models' metadata; every value is a parameter.
    return f"""
        WITH ev AS (
            INSERT INTO "{event}" ("id", "tenant_id", "event_type", "consumer",
                "payload", "idempotency_key", "request_hash", "expires_at",
                "ordering_key", "created_at")
            VALUES (%(id)s, %(tenant)s, %(event_type)s, %(consumer)s,
                %(payload)s::jsonb, %(key)s, %(hash)s, %(expires_at)s,
                %(ordering_key)s, %(now)s)
            ON CONFLICT ("tenant_id", "idempotency_key")
                WHERE "idempotency_key" IS NOT NULL DO NOTHING
            RETURNING "id", "expires_at", "ordering_key",
                {sequence_sql('"ordering_key"')} AS "sequence"
        ), fanout AS ({fanout})
        SELECT EXISTS (SELECT 1 FROM ev),
               ARRAY(SELECT ARRAY["id"::text, "endpoint_id"::text] FROM fanout
                     WHERE NOT postponed),
               (SELECT count(*) FROM fanout WHERE postponed)
    """  # noqa: S608


def _repeat(existing: Event, fingerprint: str) -> IngestResult:
    if existing.request_hash != fingerprint:
        raise IdempotencyConflict(
            "This idempotency key was already used with a different request."
        )
    return IngestResult(
        event=existing, created=False, deliveries=existing.deliveries.count()
    )
