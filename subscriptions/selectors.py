"""Reads for endpoints, always scoped by tenant."""

import json

from django.db.models import BooleanField, Prefetch, Q, QuerySet
from django.db.models.expressions import RawSQL

from subscriptions.matching import patterns_matching, payload_filter_sql
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
    *,
    tenant_id,
    event_type: str,
    consumer: str | None = None,
    payload: dict | None = None,
) -> QuerySet[Endpoint]:
    """Active endpoints of the tenant that want `event_type` (of `consumer` only,
    when given) and, when a `payload` is given, whose payload filter it passes
    (without one: whatever their payload filters).

    For producers' types; platform events have a rule of their own
    (deliveries.services.platform_events.recipient_sql).
    """
    endpoints = Endpoint.objects.filter(tenant_id=tenant_id, is_active=True).filter(
        Q(event_types=[]) | Q(event_types__overlap=patterns_matching(event_type))
    )
    if consumer is not None:
        endpoints = endpoints.filter(consumer=consumer)
    if payload is not None:
        # The event-type and consumer conditions above come first by themselves:
        # the queryset's rows are filtered before this one is checked.
        passes = payload_filter_sql(
            endpoint=f'"{Endpoint._meta.db_table}"', payload="%s::jsonb", wanted="true"
        )
        endpoints = endpoints.alias(
            # SQL from constants; the payload is a parameter.
            passes=RawSQL(  # noqa: S611
                passes,
                [json.dumps(payload, ensure_ascii=False)],
                output_field=BooleanField(),
            )
        ).filter(passes=True)
    return endpoints
