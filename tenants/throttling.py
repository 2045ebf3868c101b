"""Per-tenant limits in Redis token buckets, answered 429 with RateLimit-* headers.

Two buckets per tenant: event ingestion (the tenant's `rate_limit` events/s)
and every other authenticated API call (`WEBHOOK_API_RATE_LIMIT` requests/s), so
that browsing or replaying cannot crowd out publishing, nor the reverse.
"""

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.throttling import BaseThrottle

from tenants.models import Tenant
from webhooks_project import metrics, token_bucket
from webhooks_project.token_bucket import BucketResult, retry_after_header


class RateLimited(APIException):
    """429 with Retry-After and RateLimit-* headers."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = "Rate limit exceeded."
    default_code = "rate_limited"

    def __init__(self, result: BucketResult, detail: str | None = None):
        wait = retry_after_header(result.retry_after)
        super().__init__(detail or f"Rate limit exceeded; retry in {wait} s.")
        self.headers = rate_limit_headers(result)
        self.headers["Retry-After"] = retry_after_header(result.retry_after)


def tenant_rate(tenant: Tenant) -> int:
    """The tenant's events per second."""
    return tenant.rate_limit or settings.WEBHOOK_TENANT_RATE_LIMIT


def tenant_check_rate(*, tenant: Tenant, events: int = 1) -> BucketResult | None:
    """Take one token per event from the tenant's bucket, all or none; else 429.

    A refused take leaves the bucket as it was. More events than the burst can
    never pass, and the 429 says so.
    """
    rate = tenant_rate(tenant)
    detail = None
    if events > 2 * rate:
        detail = (
            f"A batch of {events} events can never pass: the tenant's burst is "
            f"{2 * rate} events. Send at most {2 * rate} per request."
        )
    return _take_or_refuse(
        f"rl:tenant:{tenant.pk}", rate, "tenant", cost=events, detail=detail
    )


def tenant_return_tokens(*, tenant: Tenant, events: int) -> None:
    """Put back the tokens of `events` taken for a request that stored nothing."""
    rate = tenant_rate(tenant)
    token_bucket.give_back(
        key=f"rl:tenant:{tenant.pk}", rate=rate, burst=2 * rate, count=events
    )


def _take_or_refuse(
    key: str, rate: int, scope: str, *, cost: int = 1, detail: str | None = None
) -> BucketResult | None:
    """`cost` tokens from bucket `key` (a burst of twice `rate`); 429 when short.

    None when Redis cannot be reached: the limit fails open.
    """
    result = token_bucket.take(key=key, rate=rate, burst=2 * rate, cost=cost)
    if result is not None and not result.allowed:
        metrics.RATE_LIMIT_HITS.labels(scope=scope).inc()
        raise RateLimited(result, detail)
    return result


class TenantApiThrottle(BaseThrottle):
    """`WEBHOOK_API_RATE_LIMIT` calls/s per tenant, a burst of twice that (0: off).

    Runs after authentication and permissions, so the caller is a tenant. Views
    with a bucket of their own (event ingestion) leave it out.
    """

    def allow_request(self, request, view) -> bool:
        """Take one token from the tenant's API bucket; raise 429 when empty."""
        rate = settings.WEBHOOK_API_RATE_LIMIT
        tenant = getattr(request.user, "tenant", None)
        if not rate or tenant is None:
            return True
        _take_or_refuse(f"rl:api:{tenant.pk}", rate, "api")
        return True


def rate_limit_headers(result: BucketResult | None) -> dict[str, str]:
    """RateLimit-Limit/Remaining/Reset headers for a bucket result."""
    if result is None:
        return {}
    return {
        "RateLimit-Limit": str(result.limit),
        "RateLimit-Remaining": str(result.remaining),
        "RateLimit-Reset": retry_after_header(result.reset_after),
    }
