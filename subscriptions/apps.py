"""App config for endpoints (subscriptions)."""

from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    """Endpoints, their secrets and event-type filters."""

    name = "subscriptions"
    default_auto_field = "django.db.models.BigAutoField"
