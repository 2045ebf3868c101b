"""Batch ingestion: many events and their whole fan-out in one statement."""

import functools
import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from deliveries.flow import refusals
from deliveries.leases import queued_lease
from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.services.enqueue import deliveries_enqueue_on_commit
from deliveries.services.fanout_sql import endpoint_matches_sql, fanout_insert_sql
from deliveries.services.ingest import (
    IdempotencyConflict,
    IngestResult,
    request_fingerprint,
)
from deliveries.services.ordering import sequence_sql
from subscriptions.matching import patterns_matching
from subscriptions.models import Endpoint
from tenants.models import Tenant
from webhooks_project import metrics
from webhooks_project.ids import uuid7
from webhooks_project.rawsql import prepared, timestamptz_array, uuid_array

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchItem:
    """One event of a batch, as `event_ingest` takes it."""

    event_type: str
    payload: dict
    consumer: str | None = None
    idempotency_key: str | None = None
    expires_at: datetime | None = None
    ordering_key: str | None = None


def events_ingest_batch(
    *, tenant: Tenant, items: list[BatchItem]
) -> list[IngestResult]:
    """Accept every item or none: one result per item, in the items' order.

    One statement writes the new events and their whole fan-out; their tasks
    are published together on commit (one confirm round). An item repeating an
    idempotency key with the same body (of an earlier event, or of an earlier
    item) answers that event, created False, and writes nothing; with another
    body, IdempotencyConflict is raised and nothing is stored.
    """
    fingerprints = [
        request_fingerprint(
            event_type=item.event_type,
            payload=item.payload,
            consumer=item.consumer,
            ordering_key=item.ordering_key,
        )
        for item in items
    ]
    answered_by = _answered_by(items, fingerprints)
    fresh = [index for index, first in enumerate(answered_by) if first == index]
    now = timezone.now()
    events = {
        index: _event(tenant, items[index], fingerprints[index], now) for index in fresh
    }
    # Endpoints refusing every delivery get theirs postponed to when that ends,
    # unpublished (waiting leases).
    held = refusals.refusing_for_tenant(tenant.pk)
    # One JSON document for every item: PostgreSQL parses it once, where
    # arrays of strings cost a regex escape per element on the client.
    rows = [
        {
            "id": str(events[index].pk),
            "event_type": items[index].event_type,
            "consumer": items[index].consumer,
            "payload": items[index].payload,
            "key": items[index].idempotency_key,
            "hash": fingerprints[index],
            "expires_at": _iso(items[index].expires_at),
            "ordering_key": items[index].ordering_key,
            "patterns": patterns_matching(items[index].event_type),
        }
        for index in fresh
    ]
    params = {
        "tenant": tenant.pk,
        "items": json.dumps(rows, ensure_ascii=False),
        "now": now,
        "lease": queued_lease(now),
        "pending": DeliveryStatus.PENDING,
        "held": uuid_array(held),
        "until": timestamptz_array(held.values()),
    }
    with transaction.atomic():
        with prepared(_batch_sql(), params) as cursor:
            created_ids, published, postponed = cursor.fetchone()
        created = set(created_ids)
        # Keys already used (or by a concurrent batch that committed first):
        # read anew, and a conflict rolls the whole batch back.
        repeats = _originals(
            tenant,
            {
                items[index].idempotency_key: fingerprints[index]
                for index in fresh
                if events[index].pk not in created
            },
        )
    fanned_out = Counter(event_id for _, _, event_id in published)
    fanned_out.update(postponed)
    answers: dict[int, IngestResult] = {}
    for index in fresh:
        event = events[index]
        if event.pk in created:
            event._state.adding = False
            answers[index] = IngestResult(
                event=event, created=True, deliveries=fanned_out[str(event.pk)]
            )
        else:
            answers[index] = repeats[items[index].idempotency_key]
    results = [
        answers[index]
        if first == index
        else IngestResult(
            event=answers[first].event,
            created=False,
            deliveries=answers[first].deliveries,
        )
        for index, first in enumerate(answered_by)
    ]
    _accepted(tenant, results, published, len(postponed))
    return results


def _answered_by(items: list[BatchItem], fingerprints: list[str]) -> list[int]:
    """For each item, the index of the first item with its key (itself if none).

    Raises IdempotencyConflict when two items share a key with other bodies.
    """
    first_of: dict[str, int] = {}
    answered_by = []
    for index, item in enumerate(items):
        key = item.idempotency_key
        first = first_of.setdefault(key, index) if key is not None else index
        if fingerprints[first] != fingerprints[index]:
            raise IdempotencyConflict(
                f"events[{index}]: event_id {key!r} is also events[{first}]'s, "
                "with a different body."
            )
        answered_by.append(first)
    return answered_by


def _event(tenant: Tenant, item: BatchItem, fingerprint: str, now) -> Event:
    return Event(
        id=uuid7(),
        tenant=tenant,
        event_type=item.event_type,
        consumer=item.consumer,
        payload=item.payload,
        idempotency_key=item.idempotency_key,
        request_hash=fingerprint,
        expires_at=item.expires_at,
        ordering_key=item.ordering_key,
        created_at=now,
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _originals(tenant: Tenant, fingerprints: dict[str, str]) -> dict[str, IngestResult]:
    """The stored events of these keys (`fingerprints`: key -> this batch's body).

    Raises IdempotencyConflict for a key stored with another body.
    """
    if not fingerprints:
        return {}
    events = Event.objects.filter(tenant=tenant, idempotency_key__in=fingerprints)
    originals = {event.idempotency_key: event for event in events}
    for key, fingerprint in fingerprints.items():
        if originals[key].request_hash != fingerprint:
            raise IdempotencyConflict(
                f"event_id {key!r} was already used with a different request."
            )
    counts = dict(
        Delivery.objects.filter(event__in=originals.values())
        .values_list("event_id")
        .annotate(Count("id"))
    )
    return {
        key: IngestResult(
            event=event, created=False, deliveries=counts.get(event.pk, 0)
        )
        for key, event in originals.items()
    }


def _accepted(
    tenant: Tenant, results: list[IngestResult], published: list, held_count: int
) -> None:
    """Tasks, metrics and a log line for what the batch created, on commit."""
    created = sum(result.created for result in results)
    deliveries_enqueue_on_commit((d, e) for d, e, _ in published)
    if held_count:
        held_metric = metrics.DELIVERIES_POSTPONED.labels(reason="held")
        transaction.on_commit(lambda: held_metric.inc(held_count))
    if created:
        transaction.on_commit(lambda: metrics.EVENTS_INGESTED.inc(created))
    logger.info(
        "batch of %d events accepted: %d created, %d deliveries",
        len(results),
        created,
        len(published) + held_count,
        extra={
            "tenant_id": tenant.pk,
            "events": len(results),
            "events_created": created,
            "deliveries": len(published) + held_count,
        },
    )


@functools.cache
def _batch_sql() -> str:
    event, endpoint = Event._meta.db_table, Endpoint._meta.db_table
    fanout = fanout_insert_sql(
        source=f'ev JOIN item AS i ON i."id" = ev."id" CROSS JOIN "{endpoint}" AS ep',
        condition=endpoint_matches_sql(
            patterns='i."patterns"',
            payload='i."payload"',
            consumer='AND (i."consumer" IS NULL OR ep."consumer" = i."consumer")',
        ),
        ordering_key='ev."ordering_key"',
        sequence='i."sequence"',
    )
    # Identifiers come from the models' metadata; every value is a parameter.
    # `item` is computed once (MATERIALIZED): each item is unpacked once,
    # however many endpoints it is matched with, and keyed items take their
    # sequence numbers once, in the items' order (PostgreSQL evaluates a
    # volatile function after the ORDER BY).
    return f"""
        WITH item AS MATERIALIZED (
            SELECT (e->>'id')::uuid AS "id", e->>'event_type' AS "event_type",
                   e->>'consumer' AS "consumer", e->'payload' AS "payload",
                   e->>'key' AS "key", e->>'hash' AS "hash",
                   (e->>'expires_at')::timestamptz AS "expires_at",
                   e->>'ordering_key' AS "ordering_key",
                   {sequence_sql("e->>'ordering_key'")} AS "sequence",
                   ARRAY(SELECT jsonb_array_elements_text(e->'patterns'))
                       ::varchar[] AS "patterns"
            FROM jsonb_array_elements(%(items)s::jsonb) WITH ORDINALITY AS t(e, n)
            ORDER BY t.n
        ), ev AS (
            INSERT INTO "{event}" ("id", "tenant_id", "event_type", "consumer",
                "payload", "idempotency_key", "request_hash", "expires_at",
                "ordering_key", "created_at")
            SELECT i."id", %(tenant)s, i."event_type", i."consumer", i."payload",
                i."key", i."hash", i."expires_at", i."ordering_key", %(now)s
            FROM item AS i
            -- Keys in one order in every batch: two batches sharing keys wait
            -- for each other's commit instead of deadlocking.
            ORDER BY i."key"
            ON CONFLICT ("tenant_id", "idempotency_key")
                WHERE "idempotency_key" IS NOT NULL DO NOTHING
            RETURNING "id", "expires_at", "ordering_key"
        ), fanout AS ({fanout})
        SELECT ARRAY(SELECT "id" FROM ev),
               ARRAY(SELECT ARRAY["id"::text, "endpoint_id"::text,
                                  "event_id"::text]
                     FROM fanout WHERE NOT postponed),
               ARRAY(SELECT "event_id"::text FROM fanout WHERE postponed)
    """  # noqa: S608
