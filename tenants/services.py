"""Writes for tenants and API keys."""

from dataclasses import dataclass
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from tenants.keys import display_prefix, generate_key, hash_key
from tenants.models import ApiKey, Tenant

# A key's last_used_at is written at most this often (seconds): not every request.
# Most active API keys one tenant may have (400 on creating one more): a bound
# on rows, far above any key-per-service habit, not an operator's choice.
MAX_API_KEYS_PER_TENANT = 100
KEY_TOUCH_INTERVAL = 60


@dataclass(frozen=True)
class IssuedKey:
    """A freshly created key: the only moment the full key exists in clear."""

    api_key: ApiKey
    key: str


def tenant_create(
    *, name: str, rate_limit: int | None = None, retention_days: int | None = None
) -> Tenant:
    """Create a tenant (None: the default rate limit and retention)."""
    return Tenant.objects.create(
        name=name, rate_limit=rate_limit, retention_days=retention_days
    )


@transaction.atomic
def api_key_create(*, tenant: Tenant, name: str = "") -> IssuedKey:
    """Create an API key for `tenant`; the clear key is returned once.

    Raises ValidationError when the tenant has MAX_API_KEYS_PER_TENANT active
    keys.
    """
    # Lock the tenant so that concurrent creations cannot both pass the count.
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
    limit = MAX_API_KEYS_PER_TENANT
    if ApiKey.objects.filter(tenant=tenant, revoked_at__isnull=True).count() >= limit:
        raise ValidationError(
            f"A tenant can have at most {limit} active API keys; revoke one first."
        )
    key = generate_key()
    api_key = ApiKey.objects.create(
        tenant=tenant, name=name, prefix=display_prefix(key), key_hash=hash_key(key)
    )
    return IssuedKey(api_key=api_key, key=key)


def tenant_create_with_key(
    *,
    name: str,
    rate_limit: int | None = None,
    retention_days: int | None = None,
    key_name: str = "default",
) -> IssuedKey:
    """Create a tenant and its first API key in one transaction."""
    with transaction.atomic():
        tenant = tenant_create(
            name=name, rate_limit=rate_limit, retention_days=retention_days
        )
        return api_key_create(tenant=tenant, name=key_name)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke a key: it stops authenticating on the next request."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_touch(*, api_key: ApiKey) -> None:
    """Record use of a key, writing at most once per KEY_TOUCH_INTERVAL."""
    now = timezone.now()
    interval = timedelta(seconds=KEY_TOUCH_INTERVAL)
    if api_key.last_used_at is not None and now - api_key.last_used_at < interval:
        return
    ApiKey.objects.filter(pk=api_key.pk).exclude(
        last_used_at__gte=now - interval
    ).update(last_used_at=now)
    api_key.last_used_at = now
