"""App config for tenants and their API keys."""

from django.apps import AppConfig


class TenantsConfig(AppConfig):
    """Tenants, API keys, key authentication and the tenant rate limit."""

    name = "tenants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the OpenAPI extension for API key authentication."""
        from tenants import schema  # noqa: F401
