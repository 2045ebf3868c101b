"""Writes for endpoints: create, update, delete, secret rotation, enable/disable."""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from subscriptions.filters import compile_filter
from subscriptions.matching import is_reserved_event_type
from subscriptions.models import Endpoint, EndpointSecret
from subscriptions.secrets import generate_secret
from subscriptions.urlcheck import url_host
from tenants.models import Tenant

UPDATABLE_FIELDS = (
    "url",
    "consumer",
    "description",
    "event_types",
    "filter",
    "headers",
    "rate_limit",
    "max_in_flight",
    "is_active",
)


class EndpointInactive(Exception):
    """The endpoint is disabled: it takes no test event, recovery or replay."""


@transaction.atomic
def endpoint_create(
    *,
    tenant: Tenant,
    url: str,
    consumer: str | None = None,
    description: str = "",
    event_types: list[str] | None = None,
    filter: dict | None = None,
    headers: dict[str, str] | None = None,
    rate_limit: int | None = None,
    max_in_flight: int | None = None,
    secret: str | None = None,
    is_active: bool = True,
) -> Endpoint:
    """Create an endpoint and its first signing secret (generated when not given).

    Raises ValidationError past the tenant's limits (`endpoint_limit_check`),
    and subscriptions.filters.FilterError for a malformed `filter`.
    """
    # Lock the tenant so that concurrent creations cannot both pass the count.
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
    endpoint_limit_check(tenant=tenant, url=url)
    endpoint = Endpoint.objects.create(
        tenant=tenant,
        url=url,
        consumer=consumer,
        description=description,
        event_types=_normalise_filters(event_types or []),
        filter=filter,
        filter_path=compile_filter(filter),
        headers=headers or {},
        rate_limit=rate_limit,
        max_in_flight=max_in_flight,
        is_active=is_active,
    )
    EndpointSecret.objects.create(endpoint=endpoint, secret=secret or generate_secret())
    return endpoint


def endpoint_limit_check(*, tenant: Tenant, url: str, endpoint_id=None) -> None:
    """Raise ValidationError when an endpoint at `url` would pass a tenant limit.

    WEBHOOK_MAX_ENDPOINTS_PER_TENANT in all (for a new endpoint: no
    `endpoint_id`), and WEBHOOK_MAX_ENDPOINTS_PER_HOST at `url`'s host, so that
    one event cannot fan out into a flood of requests to one host.
    """
    others = Endpoint.objects.filter(tenant=tenant, deleted_at__isnull=True).exclude(
        pk=endpoint_id
    )
    limit = settings.WEBHOOK_MAX_ENDPOINTS_PER_TENANT
    if endpoint_id is None and others.count() >= limit:
        raise ValidationError(
            f"A tenant can have at most {limit} endpoints; delete one first."
        )
    host = url_host(url)
    per_host = settings.WEBHOOK_MAX_ENDPOINTS_PER_HOST
    # At most WEBHOOK_MAX_ENDPOINTS_PER_TENANT short rows.
    at_host = sum(
        1 for other in others.values_list("url", flat=True) if url_host(other) == host
    )
    if at_host >= per_host:
        message = (
            f"A tenant can have at most {per_host} endpoints at one host ({host})."
        )
        raise ValidationError({"url": [message]})


@transaction.atomic
def endpoint_update(*, endpoint: Endpoint, **changes) -> Endpoint:
    """Apply `changes` (a subset of UPDATABLE_FIELDS) to an endpoint.

    A new `filter` is compiled with it (FilterError when malformed).
    """
    unknown = set(changes) - set(UPDATABLE_FIELDS)
    if unknown:
        raise TypeError(f"cannot update {sorted(unknown)}")
    if "event_types" in changes:
        changes["event_types"] = _normalise_filters(changes["event_types"] or [])
    if "filter" in changes:
        changes["filter_path"] = compile_filter(changes["filter"])
    if "url" in changes and changes["url"] != endpoint.url:
        Tenant.objects.select_for_update().filter(pk=endpoint.tenant_id).first()
        endpoint_limit_check(
            tenant=endpoint.tenant, url=changes["url"], endpoint_id=endpoint.pk
        )
    enabling = changes.get("is_active")
    if enabling is not None and enabling != endpoint.is_active:
        endpoint.disabled_reason = "" if enabling else "disabled by the tenant"
        endpoint.disabled_at = None if enabling else timezone.now()
    for name, value in changes.items():
        setattr(endpoint, name, value)
    endpoint.save()
    return endpoint


def endpoint_delete(*, endpoint: Endpoint) -> None:
    """Delete an endpoint: gone and inactive at once, its rows purged later.

    Its deliveries and attempts may be millions: the hourly cleanup deletes them
    in batches (deliveries.services.sweeps), then the endpoint with its secrets.
    """
    now = timezone.now()
    Endpoint.objects.filter(pk=endpoint.pk, deleted_at__isnull=True).update(
        is_active=False,
        disabled_reason="deleted",
        disabled_at=now,
        deleted_at=now,
        updated_at=now,
    )


@transaction.atomic
def endpoint_rotate_secret(*, endpoint: Endpoint, secret: str | None = None) -> str:
    """Make a new current secret; the one it replaces keeps signing for the grace.

    An older secret still in its grace ends now: a delivery never carries more
    than two signatures, however often the endpoint is rotated.
    """
    now = timezone.now()
    grace_end = now + timedelta(seconds=settings.WEBHOOK_SECRET_ROTATION_GRACE)
    # Lock the endpoint so two rotations never race on the current secret.
    Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
    EndpointSecret.objects.filter(endpoint=endpoint, expires_at__isnull=False).delete()
    EndpointSecret.objects.filter(endpoint=endpoint, expires_at__isnull=True).update(
        expires_at=grace_end
    )
    new_secret = secret or generate_secret()
    EndpointSecret.objects.create(endpoint=endpoint, secret=new_secret, created_at=now)
    return new_secret


def expired_secrets_delete() -> int:
    """Delete signing secrets whose grace has ended; return how many."""
    return EndpointSecret.objects.filter(expires_at__lte=timezone.now()).delete()[0]


def endpoint_disable(*, endpoint_id, reason: str) -> bool:
    """Disable an endpoint with a reason; True when this call disabled it."""
    updated = Endpoint.objects.filter(pk=endpoint_id, is_active=True).update(
        is_active=False,
        disabled_reason=reason[:255],
        disabled_at=timezone.now(),
        updated_at=timezone.now(),
    )
    return bool(updated)


def _normalise_filters(filters: list[str]) -> list[str]:
    """Drop duplicates, keep order; `["*"]` is stored as "all" (empty).

    `*` beside platform types keeps both: "all" does not include the platform's
    operational events, which an endpoint gets only by naming them.
    """
    unique = list(dict.fromkeys(filters))
    if "*" not in unique:
        return unique
    platform = [item for item in unique if is_reserved_event_type(item)]
    return ["*", *platform] if platform else []
