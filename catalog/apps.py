"""App config for the event-type catalog."""

from django.apps import AppConfig


class CatalogConfig(AppConfig):
    """Event types a tenant publishes, with the schemas their payloads follow."""

    name = "catalog"
    verbose_name = "Event-type catalog"
    default_auto_field = "django.db.models.BigAutoField"
