"""App config for the consumer portal."""

from django.apps import AppConfig


class PortalConfig(AppConfig):
    """Portal sessions (single-use links) and the consumer's pages."""

    name = "portal"
    default_auto_field = "django.db.models.BigAutoField"
