"""Reads of the event-type catalog, always scoped by tenant."""

from django.db.models import QuerySet

from catalog.models import EventType
from tenants.models import Tenant


def event_type_list(*, tenant: Tenant) -> QuerySet[EventType]:
    """The tenant's event types, by name."""
    return EventType.objects.filter(tenant=tenant).order_by("name")


def event_type_get(*, tenant: Tenant, name: str) -> EventType | None:
    """The tenant's event type `name`, or None (another tenant's included)."""
    return event_type_list(tenant=tenant).filter(name=name).first()


def event_type_schema(*, tenant: Tenant, name: str) -> dict | None:
    """The schema of the tenant's event type `name`; None without entry or schema."""
    return (
        EventType.objects.filter(tenant=tenant, name=name)
        .values_list("schema", flat=True)
        .first()
    )


def event_type_published(*, tenant: Tenant) -> QuerySet[EventType]:
    """The types shown to consumers: every one not deprecated, by name."""
    return event_type_list(tenant=tenant).filter(deprecated=False)


def event_type_names(*, tenant: Tenant) -> list[str]:
    """The names of the tenant's types that are not deprecated."""
    return list(event_type_published(tenant=tenant).values_list("name", flat=True))
