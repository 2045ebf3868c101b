"""Ingestion: store the event once and write its fan-out in one transaction."""

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.services.enqueue import deliveries_enqueue_on_commit
from subscriptions.selectors import endpoints_matching
from tenants.models import Tenant
from webhooks_project import metrics

logger = logging.getLogger(__name__)


class IdempotencyConflict(Exception):
    """An idempotency key was reused with a different request body."""


@dataclass(frozen=True)
class IngestResult:
    """The stored event, whether this call created it, and its fan-out size."""

    event: Event
    created: bool
    deliveries: int


def request_fingerprint(*, event_type: str, payload: dict) -> str:
    """SHA-256 of the canonical request, to compare repeats of one key."""
    canonical = json.dumps(
        {"event_type": event_type, "payload": payload},
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
) -> IngestResult:
    """Accept an event: one Event, one Delivery per matching endpoint, tasks on commit.

    A repeated idempotency key returns the original event and creates nothing; the
    same key with another body raises IdempotencyConflict.
    """
    fingerprint = request_fingerprint(event_type=event_type, payload=payload)
    # No lookup first: a repeated key is rare, and the unique constraint finds it
    # (the insert fails, nothing is written) for one round trip less per event.
    try:
        with transaction.atomic():
            return _create(
                tenant=tenant,
                event_type=event_type,
                payload=payload,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
            )
    except IntegrityError:
        if not idempotency_key:
            raise
        # This key was used before (or by a concurrent request that won).
        existing = Event.objects.get(tenant=tenant, idempotency_key=idempotency_key)
        return _repeat(existing, fingerprint)


def _create(
    *,
    tenant: Tenant,
    event_type: str,
    payload: dict,
    idempotency_key: str | None,
    fingerprint: str,
) -> IngestResult:
    event = Event.objects.create(
        tenant=tenant,
        event_type=event_type,
        payload=payload,
        idempotency_key=idempotency_key or None,
        request_hash=fingerprint,
    )
    endpoint_ids = list(
        endpoints_matching(tenant_id=tenant.pk, event_type=event_type).values_list(
            "id", flat=True
        )
    )
    now = timezone.now()
    lease = now + timedelta(seconds=settings.WEBHOOK_QUEUE_LEASE_SECONDS)
    deliveries = Delivery.objects.bulk_create(
        [
            Delivery(
                tenant=tenant,
                event=event,
                endpoint_id=endpoint_id,
                status=DeliveryStatus.PENDING,
                next_attempt_at=now,
                lease_expires_at=lease,
            )
            for endpoint_id in endpoint_ids
        ]
    )
    deliveries_enqueue_on_commit(delivery.id for delivery in deliveries)
    transaction.on_commit(metrics.EVENTS_INGESTED.inc)
    logger.info(
        "event %s accepted: %s, %d deliveries",
        event.pk,
        event_type,
        len(deliveries),
        extra={
            "tenant_id": tenant.pk,
            "event_id": event.pk,
            "event_type": event_type,
            "deliveries": len(deliveries),
        },
    )
    return IngestResult(event=event, created=True, deliveries=len(deliveries))


def _repeat(existing: Event, fingerprint: str) -> IngestResult:
    if existing.request_hash != fingerprint:
        raise IdempotencyConflict(
            "This idempotency key was already used with a different request."
        )
    return IngestResult(
        event=existing, created=False, deliveries=existing.deliveries.count()
    )
