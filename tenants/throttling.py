"""Per-tenant ingestion limit: the tenant's token bucket, with RateLimit-* headers."""

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException

from tenants import ratelimit
from tenants.models import Tenant
from webhooks_project import metrics


class RateLimited(APIException):
    """429 with Retry-After and RateLimit-* headers."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = "Rate limit exceeded."
    default_code = "rate_limited"

    def __init__(self, result: ratelimit.BucketResult):
        wait = ratelimit.retry_after_header(result.retry_after)
        super().__init__(f"Rate limit exceeded; retry in {wait} s.")
        self.headers = rate_limit_headers(result)
        self.headers["Retry-After"] = ratelimit.retry_after_header(result.retry_after)


def tenant_rate(tenant: Tenant) -> int:
    """The tenant's events per second."""
    return tenant.rate_limit or settings.WEBHOOK_TENANT_RATE_LIMIT


def tenant_check_rate(*, tenant: Tenant) -> ratelimit.BucketResult | None:
    """Take one event's token from the tenant's bucket; raise 429 when empty."""
    rate = tenant_rate(tenant)
    result = ratelimit.take(key=f"rl:tenant:{tenant.pk}", rate=rate, burst=2 * rate)
    if result is not None and not result.allowed:
        metrics.RATE_LIMIT_HITS.labels(scope="tenant").inc()
        raise RateLimited(result)
    return result


def rate_limit_headers(result: ratelimit.BucketResult | None) -> dict[str, str]:
    """RateLimit-Limit/Remaining/Reset headers for a bucket result."""
    if result is None:
        return {}
    return {
        "RateLimit-Limit": str(result.limit),
        "RateLimit-Remaining": str(result.remaining),
        "RateLimit-Reset": ratelimit.retry_after_header(result.reset_after),
    }
