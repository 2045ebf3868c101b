"""App config for events, deliveries and their attempts."""

from django.apps import AppConfig


class DeliveriesConfig(AppConfig):
    """Ingestion, fan-out, the delivery task and the dead-letter queue."""

    name = "deliveries"
    default_auto_field = "django.db.models.BigAutoField"
