"""Reads for tenants and API keys."""

import hmac
import uuid

from django.db.models import QuerySet

from tenants.keys import KEY_PREFIX, display_prefix, hash_key
from tenants.models import ApiKey, Tenant


def api_key_authenticate(*, key: str) -> ApiKey | None:
    """Return the active key matching `key` (with its tenant), or None."""
    if not key.startswith(KEY_PREFIX) or len(key) > 256:
        return None
    candidate = (
        ApiKey.objects.select_related("tenant")
        .filter(prefix=display_prefix(key), revoked_at__isnull=True)
        .first()
    )
    if candidate is None or not candidate.tenant.is_active:
        return None
    if not hmac.compare_digest(candidate.key_hash, hash_key(key)):
        return None
    return candidate


def api_key_list(*, tenant: Tenant) -> QuerySet[ApiKey]:
    """The tenant's keys that are not revoked, newest first."""
    return ApiKey.objects.filter(tenant=tenant, revoked_at__isnull=True)


def tenant_get_by_id_or_name(*, ident: str) -> Tenant | None:
    """Find a tenant by its id or its name."""
    tenant = Tenant.objects.filter(name=ident).first()
    if tenant is not None:
        return tenant
    try:
        tenant_id = uuid.UUID(ident)
    except ValueError:
        return None
    return Tenant.objects.filter(pk=tenant_id).first()
