"""Serializers of an endpoint's test event, recovery and statistics."""

from datetime import timedelta

from django.utils import timezone
from rest_framework import serializers

from deliveries.api.serializers import (
    EventCreateSerializer,
    EventTypeField,
    PayloadField,
)
from deliveries.models import AttemptOutcome, DeliveryStatus
from deliveries.services.test_events import TEST_EVENT_TYPE
from deliveries.stats import MAX_WINDOW
from subscriptions.api.serializers import CircuitSerializer

# The stats window when none is asked for: the last day.
DEFAULT_STATS_WINDOW = timedelta(hours=24)


class TestEventSerializer(serializers.Serializer):
    """Input of `POST /api/v1/endpoints/{id}/test`."""

    __test__ = False  # not a pytest test class, whatever its name

    event_type = EventTypeField(
        max_length=255,
        trim_whitespace=False,
        required=False,
        default=TEST_EVENT_TYPE,
        help_text=f"Default `{TEST_EVENT_TYPE}`.",
    )
    payload = PayloadField(required=False, default=dict, help_text="Default `{}`.")

    # The same rules as a published event's.
    validate_event_type = EventCreateSerializer.validate_event_type
    validate_payload = EventCreateSerializer.validate_payload


class TestEventResultSerializer(serializers.Serializer):
    """The recorded test event and its one delivery."""

    __test__ = False

    event = serializers.UUIDField()
    delivery = serializers.UUIDField()


class RecoverSerializer(serializers.Serializer):
    """Input of `POST /api/v1/endpoints/{id}/recover`: a window of event times."""

    since = serializers.DateTimeField(help_text="Events created at or after this.")
    until = serializers.DateTimeField(
        required=False, help_text="Events created before this (default: now)."
    )

    def validate(self, attrs: dict) -> dict:
        """`until`, when given, is not before `since`."""
        until = attrs.get("until")
        if until is not None and until < attrs["since"]:
            raise serializers.ValidationError({"until": ["Must not be before since."]})
        return attrs


class RecoverResultSerializer(serializers.Serializer):
    """What a recovery queued again and created."""

    replayed = serializers.IntegerField(
        help_text="Dead-lettered deliveries of the window's events queued again."
    )
    created = serializers.IntegerField(
        help_text="Deliveries created for matching events the endpoint never had."
    )
    remaining = serializers.IntegerField(
        required=False,
        help_text="Present when more is left than one call handles "
        "(WEBHOOK_REPLAY_MAX in all): call again for the rest.",
    )


class StatsQuerySerializer(serializers.Serializer):
    """`?since=&until=` of the stats: the last 24 hours unless told."""

    since = serializers.DateTimeField(
        required=False, help_text="Default: 24 hours before `until`."
    )
    until = serializers.DateTimeField(required=False, help_text="Default: now.")

    def validate(self, attrs: dict) -> dict:
        """Fill the defaults; `since` before `until`, at most 31 days apart."""
        until = attrs.get("until") or timezone.now()
        try:
            since = attrs.get("since") or until - DEFAULT_STATS_WINDOW
        except OverflowError:
            raise serializers.ValidationError({"until": ["Out of range."]}) from None
        if since >= until:
            if "until" in attrs:
                raise serializers.ValidationError({"until": ["Must be after since."]})
            raise serializers.ValidationError({"since": ["Must be in the past."]})
        if until - since > MAX_WINDOW:
            raise serializers.ValidationError(
                {"since": [f"The window is at most {MAX_WINDOW.days} days."]}
            )
        return {"since": since, "until": until}


def _counts(name: str, values, help_text: str) -> serializers.Serializer:
    """A serializer of one count per value of a TextChoices (all present)."""
    fields = {value: serializers.IntegerField() for value in values}
    return type(name, (serializers.Serializer,), fields)(help_text=help_text)


class DurationsSerializer(serializers.Serializer):
    """Percentiles of the attempts' durations (null without attempts)."""

    p50 = serializers.IntegerField(allow_null=True)
    p95 = serializers.IntegerField(allow_null=True)


class StatsBucketSerializer(serializers.Serializer):
    """One hour (or day) of attempts."""

    start = serializers.DateTimeField(help_text="The bucket's start (UTC).")
    attempts = serializers.IntegerField()
    succeeded = serializers.IntegerField(help_text="Attempts answered 2xx.")
    failed = serializers.IntegerField(help_text="The other attempts.")
    p50_ms = serializers.IntegerField(
        allow_null=True, help_text="Median duration (null without attempts)."
    )


class EndpointStatsSerializer(serializers.Serializer):
    """An endpoint's deliveries created in the window and their attempts in it."""

    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    sampled = serializers.BooleanField(
        help_text="True when the window had more deliveries than are read "
        "(100,000): the figures are those of the newest."
    )
    deliveries = _counts(
        "DeliveryStatusCounts",
        DeliveryStatus.values,
        "The window's deliveries by current status.",
    )
    attempts = _counts(
        "AttemptOutcomeCounts",
        AttemptOutcome.values,
        "Their attempts in the window, by outcome.",
    )
    attempts_total = serializers.IntegerField()
    success_rate = serializers.FloatField(
        allow_null=True,
        help_text="Attempts that succeeded / attempts (null without attempts).",
    )
    duration_ms = DurationsSerializer()
    last_success_at = serializers.DateTimeField(allow_null=True)
    last_failure_at = serializers.DateTimeField(allow_null=True)
    circuit = CircuitSerializer()
    series = StatsBucketSerializer(
        many=True,
        help_text="Every hour of the window (UTC), or every day when it is over "
        "72 hours, oldest first, empty ones included.",
    )
