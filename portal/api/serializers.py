"""Serializers of `POST /api/v1/portal-sessions`."""

from rest_framework import serializers

from portal.services import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS
from subscriptions.api.serializers import ConsumerField


class PortalSessionCreateSerializer(serializers.Serializer):
    """Which consumer the link opens, for how long, and whether it may change."""

    consumer = ConsumerField(
        help_text="The consumer whose endpoints the portal manages (it may have "
        "none yet)."
    )
    ttl_seconds = serializers.IntegerField(
        min_value=1,
        max_value=MAX_TTL_SECONDS,
        default=DEFAULT_TTL_SECONDS,
        help_text="How long the link and the session it opens last, in seconds.",
    )
    read_only = serializers.BooleanField(
        default=False,
        help_text="The session sees everything and every change answers 403.",
    )


class PortalSessionSerializer(serializers.Serializer):
    """A new portal session: its single-use link, shown this once."""

    id = serializers.UUIDField(source="session.id")
    url = serializers.URLField(
        help_text="Opens once, in a browser, without an API key; answers 403 "
        "after `expires_at` or when opened again."
    )
    consumer = serializers.CharField(source="session.consumer")
    read_only = serializers.BooleanField(source="session.read_only")
    expires_at = serializers.DateTimeField(source="session.expires_at")
