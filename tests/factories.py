"""Factories for test data, built through the services like production data."""

import uuid

from deliveries.models import Delivery, Event
from deliveries.services.ingest import event_ingest
from subscriptions.models import Endpoint
from subscriptions.services import endpoint_create
from tenants.models import Tenant
from tenants.services import tenant_create


def make_tenant(**fields) -> Tenant:
    """A tenant with a unique name."""
    fields.setdefault("name", f"tenant-{uuid.uuid4().hex[:8]}")
    return tenant_create(**fields)


def make_endpoint(
    *, tenant: Tenant, url: str = "http://127.0.0.1:9/", **fields
) -> Endpoint:
    """An endpoint of `tenant`."""
    return endpoint_create(tenant=tenant, url=url, **fields)


def make_event(
    *, tenant: Tenant, event_type: str = "order.created", payload: dict | None = None
) -> tuple[Event, list[Delivery]]:
    """An ingested event and its deliveries."""
    result = event_ingest(
        tenant=tenant, event_type=event_type, payload=payload or {"n": 1}
    )
    return result.event, list(result.event.deliveries.all())
