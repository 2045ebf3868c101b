"""Reads for events and deliveries, always scoped by tenant."""

from datetime import datetime

from django.db.models import Count, QuerySet

from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from tenants.models import Tenant


def event_list(
    *,
    tenant: Tenant,
    event_type: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    consumer: str | None = None,
) -> QuerySet[Event]:
    """The tenant's events, newest first, optionally filtered."""
    return _narrowed(
        Event.objects.filter(tenant=tenant),
        event_type=event_type,
        consumer=consumer,
        created_at__gt=created_after,
        created_at__lt=created_before,
    )


def event_get(*, tenant: Tenant, event_id) -> Event | None:
    """One of the tenant's events, or None."""
    return Event.objects.filter(tenant=tenant, pk=event_id).first()


def event_delivery_summary(*, event: Event) -> dict[str, int]:
    """How many of the event's deliveries are in each status."""
    counts = dict(
        event.deliveries.order_by()
        .values_list("status")
        .annotate(count=Count("id"))
        .values_list("status", "count")
    )
    return {status: counts.get(status, 0) for status in DeliveryStatus.values}


def delivery_list(
    *,
    tenant: Tenant,
    status: str | None = None,
    endpoint_id=None,
    event_id=None,
    consumer: str | None = None,
) -> QuerySet[Delivery]:
    """The tenant's deliveries, newest first, optionally filtered (`consumer`:
    deliveries to that consumer's endpoints)."""
    return _narrowed(
        Delivery.objects.filter(tenant=tenant),
        status=status,
        endpoint__consumer=consumer,
        endpoint_id=endpoint_id,
        event_id=event_id,
    )


def delivery_get(*, tenant: Tenant, delivery_id) -> Delivery | None:
    """One of the tenant's deliveries, or None."""
    return Delivery.objects.filter(tenant=tenant, pk=delivery_id).first()


def delivery_attempts(*, delivery: Delivery) -> QuerySet[DeliveryAttempt]:
    """A delivery's attempts in order."""
    return DeliveryAttempt.objects.filter(delivery=delivery).order_by("number")


def dead_letter_list(*, tenant: Tenant) -> QuerySet[Delivery]:
    """The tenant's dead-lettered deliveries."""
    return Delivery.objects.filter(tenant=tenant, status=DeliveryStatus.DEAD_LETTER)


def _narrowed(queryset: QuerySet, **lookups) -> QuerySet:
    """`queryset` filtered by each lookup that has a value (None or empty: none)."""
    return queryset.filter(**{name: value for name, value in lookups.items() if value})
