"""Reads for the portal, always scoped by the session's tenant and consumer."""

from django.db.models import Q, QuerySet
from django.utils import timezone

from catalog.models import EventType
from catalog.selectors import event_type_names, event_type_published
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from portal.models import PortalSession
from subscriptions.models import Endpoint
from subscriptions.selectors import endpoint_list

# Recent events scanned for event-type suggestions (newest first, indexed).
SUGGESTION_SCAN = 2000
MAX_SUGGESTIONS = 50
# Counts shown on a page stop here (an endpoint may have millions of rows).
COUNT_CAP = 10_000


def portal_session_active(*, session_id) -> PortalSession | None:
    """The portal session `session_id` if it has not expired (and its tenant is
    active), else None."""
    return (
        PortalSession.objects.select_related("tenant")
        .filter(pk=session_id, expires_at__gt=timezone.now(), tenant__is_active=True)
        .first()
    )


def portal_session_get(*, session_id) -> PortalSession | None:
    """The portal session `session_id`, expired or not."""
    return PortalSession.objects.select_related("tenant").filter(pk=session_id).first()


def portal_endpoint_list(*, portal: PortalSession) -> QuerySet[Endpoint]:
    """The consumer's endpoints (never another consumer's, nor consumer-less ones)."""
    return endpoint_list(tenant=portal.tenant, consumer=portal.consumer)


def portal_endpoint_get(*, portal: PortalSession, endpoint_id) -> Endpoint | None:
    """One of the consumer's endpoints, or None (any other id included)."""
    return portal_endpoint_list(portal=portal).filter(pk=endpoint_id).first()


def portal_delivery_list(
    *, endpoint: Endpoint, status: str | None = None
) -> QuerySet[Delivery]:
    """An endpoint's deliveries, newest first, with their event's type."""
    deliveries = Delivery.objects.filter(
        tenant_id=endpoint.tenant_id, endpoint=endpoint
    )
    if status:
        deliveries = deliveries.filter(status=status)
    return deliveries.select_related("event").defer("event__payload")


def portal_delivery_get(*, endpoint: Endpoint, delivery_id) -> Delivery | None:
    """One of an endpoint's deliveries with its event, or None."""
    return (
        Delivery.objects.select_related("event")
        .filter(tenant_id=endpoint.tenant_id, endpoint=endpoint, pk=delivery_id)
        .first()
    )


def portal_delivery_attempts(*, delivery: Delivery) -> QuerySet[DeliveryAttempt]:
    """A delivery's attempts, oldest first."""
    return DeliveryAttempt.objects.filter(delivery=delivery).order_by("number")


def portal_dead_letter_count(*, endpoint: Endpoint) -> int:
    """How many of an endpoint's deliveries are dead-lettered, up to COUNT_CAP."""
    dead = Delivery.objects.filter(endpoint=endpoint, status=DeliveryStatus.DEAD_LETTER)
    return dead.order_by()[:COUNT_CAP].count()


def portal_event_types(*, portal: PortalSession) -> QuerySet[EventType]:
    """The tenant's catalog as its consumers see it: types not deprecated."""
    return event_type_published(tenant=portal.tenant)


def portal_event_type_suggestions(*, portal: PortalSession) -> list[str]:
    """Event types to offer in the endpoint forms, by name.

    The tenant's catalog (types not deprecated, at most
    catalog.services.MAX_EVENT_TYPES_PER_TENANT), and the types of its recent
    events that this consumer could receive (addressed to it, or to no consumer
    in particular): another consumer's events do not show, even by their type.
    Bounded: among the tenant's newest SUGGESTION_SCAN events only, whoever
    they went to.
    """
    newest = (
        Event.objects.filter(tenant=portal.tenant)
        .order_by("-id")
        .values("pk")[:SUGGESTION_SCAN]
    )
    recent = (
        Event.objects.filter(pk__in=newest)
        .filter(Q(consumer__isnull=True) | Q(consumer=portal.consumer))
        .order_by("event_type")
        .values_list("event_type", flat=True)
        .distinct()
    )
    catalog = event_type_names(tenant=portal.tenant)
    return sorted({*catalog, *recent[:MAX_SUGGESTIONS]})
