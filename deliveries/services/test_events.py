"""Test events: an ordinary event delivered to one chosen endpoint only."""

import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from deliveries.flow import refusals
from deliveries.leases import lease_for
from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.services.enqueue import deliveries_enqueue_on_commit
from deliveries.services.ingest import request_fingerprint
from subscriptions.models import Endpoint
from subscriptions.services import EndpointInactive
from webhooks_project import metrics

logger = logging.getLogger(__name__)

TEST_EVENT_TYPE = "webhook.test"


@dataclass(frozen=True)
class TestEventResult:
    """The recorded test event and its one delivery."""

    # Not a pytest test class, whatever its name.
    __test__ = False

    event: Event
    delivery: Delivery

    def as_response(self) -> dict[str, str]:
        """The API's answer: the ids of the event and of its delivery."""
        return {"event": str(self.event.pk), "delivery": str(self.delivery.pk)}


def endpoint_send_test(
    *,
    endpoint: Endpoint,
    event_type: str = TEST_EVENT_TYPE,
    payload: dict | None = None,
) -> TestEventResult:
    """Record an event and deliver it to `endpoint` alone, like any delivery.

    The endpoint's event-type filters, payload filter and consumer do not
    apply: the caller chose the endpoint. The event carries the endpoint's
    consumer, so that the consumer's lists show it. The delivery is signed, retried and
    dead-lettered as any other; while the endpoint refuses every delivery it
    waits in PostgreSQL until then, as ingestion does. Raises
    EndpointInactive for a disabled endpoint.
    """
    if not endpoint.is_active:
        raise EndpointInactive("The endpoint is disabled; enable it first.")
    payload = {} if payload is None else payload
    held_until = refusals.refusing_for_tenant(endpoint.tenant_id).get(str(endpoint.pk))
    now = timezone.now()
    due = held_until or now
    with transaction.atomic():
        event = Event.objects.create(
            tenant_id=endpoint.tenant_id,
            event_type=event_type,
            consumer=endpoint.consumer,
            payload=payload,
            request_hash=request_fingerprint(
                event_type=event_type, payload=payload, consumer=endpoint.consumer
            ),
        )
        delivery = Delivery.objects.create(
            tenant_id=endpoint.tenant_id,
            event=event,
            endpoint=endpoint,
            status=DeliveryStatus.PENDING,
            next_attempt_at=due,
            lease_expires_at=lease_for(due=due, queued=held_until is None),
        )
        if held_until is None:
            deliveries_enqueue_on_commit([(delivery.pk, endpoint.pk)])
        else:
            held = metrics.DELIVERIES_POSTPONED.labels(reason="held")
            transaction.on_commit(held.inc)
        transaction.on_commit(metrics.EVENTS_INGESTED.inc)
    logger.info(
        "test event %s sent to endpoint %s: %s",
        event.pk,
        endpoint.pk,
        event_type,
        extra={
            "tenant_id": endpoint.tenant_id,
            "event_id": event.pk,
            "endpoint_id": endpoint.pk,
            "event_type": event_type,
        },
    )
    return TestEventResult(event=event, delivery=delivery)
