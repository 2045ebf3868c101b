"""Reads for endpoints, always scoped by tenant."""

from django.db.models import Prefetch, Q, QuerySet

from subscriptions.matching import patterns_matching
from subscriptions.models import Endpoint, EndpointSecret
from tenants.models import Tenant


def endpoint_list(*, tenant: Tenant, consumer: str | None = None) -> QuerySet[Endpoint]:
    """The tenant's endpoints (not deleted; `consumer`'s only when given), newest
    first, with their secrets."""
    endpoints = Endpoint.objects.filter(tenant=tenant, deleted_at__isnull=True)
    if consumer is not None:
        endpoints = endpoints.filter(consumer=consumer)
    return endpoints.prefetch_related(
        Prefetch("secrets", queryset=EndpointSecret.objects.order_by("-created_at"))
    )


def endpoint_get(*, tenant: Tenant, endpoint_id) -> Endpoint | None:
    """One of the tenant's endpoints, or None (also for another tenant's id)."""
    return endpoint_list(tenant=tenant).filter(pk=endpoint_id).first()


def endpoints_matching(
    *, tenant_id, event_type: str, consumer: str | None = None
) -> QuerySet[Endpoint]:
    """Active endpoints of the tenant that want `event_type` (of `consumer` only,
    when given)."""
    endpoints = Endpoint.objects.filter(tenant_id=tenant_id, is_active=True).filter(
        Q(event_types=[]) | Q(event_types__overlap=patterns_matching(event_type))
    )
    if consumer is not None:
        endpoints = endpoints.filter(consumer=consumer)
    return endpoints
