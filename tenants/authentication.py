"""DRF authentication by API key (`Authorization: Bearer` or `X-API-Key`)."""

from rest_framework import authentication, exceptions

from tenants.selectors import api_key_authenticate
from tenants.services import api_key_touch


class TenantPrincipal:
    """The authenticated caller: a tenant acting through one of its keys."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, api_key):
        self.api_key = api_key
        self.tenant = api_key.tenant

    def __str__(self) -> str:
        return f"tenant {self.tenant.name}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticate with a tenant API key; a wrong key is a 401."""

    keyword = "Bearer"

    def authenticate(self, request):
        """Return (TenantPrincipal, ApiKey) or None when no key was sent."""
        key = self._extract_key(request)
        if key is None:
            return None
        api_key = api_key_authenticate(key=key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        api_key_touch(api_key=api_key)
        return TenantPrincipal(api_key), api_key

    def authenticate_header(self, request) -> str:
        """Make DRF answer 401 (with WWW-Authenticate) rather than 403."""
        return self.keyword

    def _extract_key(self, request) -> str | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != self.keyword.lower() or not value.strip():
                raise exceptions.AuthenticationFailed(
                    "Use 'Authorization: Bearer <api key>'."
                )
            return value.strip()
        value = request.META.get("HTTP_X_API_KEY", "").strip()
        return value or None
