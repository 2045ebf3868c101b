"""Shared API helpers: the calling tenant and router settings."""

from rest_framework import routers

# Ids in paths are UUIDs; anything else is a 404 from the URL resolver.
UUID_PATTERN = (
    "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


class Router(routers.SimpleRouter):
    """Routes that answer with and without a trailing slash, without redirects."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


class TenantScopedMixin:
    """Views acting for the tenant behind the API key."""

    lookup_value_regex = UUID_PATTERN

    @property
    def tenant(self):
        """The authenticated tenant."""
        return self.request.user.tenant
