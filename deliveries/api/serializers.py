"""Serializers for events, deliveries, attempts and replays."""

import copy
from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from catalog.validation import payload_errors
from deliveries.models import (
    ORDERING_KEY_MAX_LENGTH,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Event,
)
from deliveries.validation import payload_error
from subscriptions.api.serializers import ConsumerField, ConsumerFilterSerializer
from subscriptions.matching import (
    EVENT_TYPE_RE,
    RESERVED_PREFIX,
    is_reserved_event_type,
    is_valid_event_type,
)
from webhooks_project.openapi import IDEMPOTENCY_HEADER

# The furthest an event's expiry may be set.
MAX_EXPIRY = timedelta(days=365)


class StrictCharField(serializers.CharField):
    """A string field that refuses numbers and booleans instead of coercing them."""

    def to_internal_value(self, data):
        """Only JSON strings are strings."""
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field(
    {"type": "string", "pattern": EVENT_TYPE_RE.pattern, "maxLength": 255}
)
class EventTypeField(StrictCharField):
    """An event type name: 1-255 characters of [A-Za-z0-9_.:-]."""


@extend_schema_field({"type": "object", "additionalProperties": {}})
class PayloadField(serializers.JSONField):
    """An event payload: any JSON object."""

    def to_internal_value(self, data):
        """As JSONField, with nesting too deep to re-encode a 400, not a 500."""
        try:
            return super().to_internal_value(data)
        except RecursionError:
            self.fail("invalid")


class EventCreateSerializer(serializers.Serializer):
    """Input of `POST /api/v1/events`."""

    event_type = EventTypeField(max_length=255, trim_whitespace=False)
    payload = PayloadField()
    consumer = ConsumerField(
        required=False,
        allow_null=True,
        help_text="Deliver only to this consumer's endpoints (default: every "
        "matching endpoint).",
    )
    event_id = StrictCharField(
        min_length=1, max_length=255, required=False, trim_whitespace=False
    )
    ordering_key = StrictCharField(
        min_length=1,
        max_length=ORDERING_KEY_MAX_LENGTH,
        required=False,
        allow_null=True,
        trim_whitespace=False,
        help_text="For each endpoint, events with the same key are delivered one "
        "at a time, in the order they were accepted: the next waits until the "
        "one before has succeeded, is dead-lettered or expired. Other keys and "
        "events without one are not held up.",
    )
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="Deliveries not made by then end as `expired` (ISO 8601, in the "
        f"future, at most {MAX_EXPIRY.days} days ahead). Or give `ttl_seconds`.",
    )
    ttl_seconds = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=int(MAX_EXPIRY.total_seconds()),
        help_text="Expire the deliveries this many seconds after acceptance.",
    )

    def get_fields(self) -> dict:
        """The declared fields, each copied shallowly for this instance.

        DRF deep-copies every declared field for every serializer it builds,
        re-running each field's constructor: on the publishing path that was
        half of the validation's CPU. These fields keep no per-request state
        besides what binding them to this serializer sets on the copy.
        """
        return {name: copy.copy(f) for name, f in self._declared_fields.items()}

    def validate_event_type(self, value: str) -> str:
        """1-255 characters of [A-Za-z0-9_.:-], not a platform type."""
        if not is_valid_event_type(value):
            raise serializers.ValidationError(
                "Use 1-255 characters of letters, digits and _ . : -"
            )
        if is_reserved_event_type(value):
            raise serializers.ValidationError(
                f"Types starting with '{RESERVED_PREFIX}' are reserved for the "
                "platform's own events."
            )
        return value

    def validate_payload(self, value):
        """A JSON object, at most MAX_PAYLOAD_DEPTH deep, without NULs."""
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        error = payload_error(value)
        if error:
            raise serializers.ValidationError(error)
        return value

    def validate_expires_at(self, value):
        """In the future, at most MAX_EXPIRY ahead."""
        if value is None:
            return value
        now = timezone.now()
        if value <= now:
            raise serializers.ValidationError("Must be in the future.")
        if value > now + MAX_EXPIRY:
            raise serializers.ValidationError(
                f"Must be at most {MAX_EXPIRY.days} days ahead."
            )
        return value

    def validate(self, attrs):
        """One expiry at most; the payload follows its type's schema, if any.

        `ttl_seconds` becomes `expires_at`. The schema is the tenant's catalog
        entry for the type (the tenant is the calling view's; the batch's items
        share its context).
        """
        ttl = attrs.pop("ttl_seconds", None)
        if ttl is not None:
            if attrs.get("expires_at") is not None:
                raise serializers.ValidationError(
                    {"ttl_seconds": ["Give expires_at or ttl_seconds, not both."]}
                )
            attrs["expires_at"] = timezone.now() + timedelta(seconds=ttl)
        tenant = getattr(self.context.get("view"), "tenant", None)
        if tenant is None:
            return attrs
        errors = payload_errors(
            tenant=tenant, event_type=attrs["event_type"], payload=attrs["payload"]
        )
        if errors and not self._is_repeat(tenant, attrs):
            raise serializers.ValidationError({"payload": errors})
        return attrs

    def _is_repeat(self, tenant, attrs) -> bool:
        """Whether the request's idempotency key names an accepted event.

        A repeat answers as its original did (or 409 for another body), even
        after the type's schema changed: only then is this asked.
        """
        request = self.context.get("request")
        header = request.headers.get(IDEMPOTENCY_HEADER) if request else None
        key = attrs.get("event_id") or header
        return (
            bool(key)
            and Event.objects.filter(tenant=tenant, idempotency_key=key).exists()
        )


# How DRF writes a datetime (ISO 8601 in the current time zone, "Z" for UTC).
_DATETIME = serializers.DateTimeField()


class EventAcceptedSerializer(serializers.Serializer):
    """The answer to an accepted (or repeated) event."""

    id = serializers.UUIDField(source="event.id")
    event_type = serializers.CharField(source="event.event_type")
    consumer = serializers.CharField(source="event.consumer", allow_null=True)
    ordering_key = serializers.CharField(source="event.ordering_key", allow_null=True)
    created_at = serializers.DateTimeField(source="event.created_at")
    expires_at = serializers.DateTimeField(source="event.expires_at", allow_null=True)
    deliveries = serializers.IntegerField()

    def to_representation(self, instance) -> dict:
        """The fields above, built directly: every accepted event answers this."""
        event = instance.event
        return {
            "id": str(event.id),
            "event_type": event.event_type,
            "consumer": event.consumer,
            "ordering_key": event.ordering_key,
            "created_at": _DATETIME.to_representation(event.created_at),
            "expires_at": _DATETIME.to_representation(event.expires_at),
            "deliveries": instance.deliveries,
        }


class EventSerializer(serializers.ModelSerializer):
    """An event as listed."""

    payload = PayloadField(read_only=True)

    class Meta:
        model = Event
        fields = (
            "id",
            "event_type",
            "consumer",
            "payload",
            "idempotency_key",
            "ordering_key",
            "expires_at",
            "created_at",
        )


class EventDetailSerializer(EventSerializer):
    """An event with a summary of its deliveries."""

    deliveries = serializers.IntegerField(source="delivery_count")
    delivery_statuses = serializers.DictField(child=serializers.IntegerField())

    class Meta(EventSerializer.Meta):
        fields = (*EventSerializer.Meta.fields, "deliveries", "delivery_statuses")


class DeliverySerializer(serializers.ModelSerializer):
    """A delivery as the contract shows it."""

    event = serializers.UUIDField(source="event_id")
    endpoint = serializers.UUIDField(source="endpoint_id")

    class Meta:
        model = Delivery
        fields = (
            "id",
            "event",
            "endpoint",
            "status",
            "attempt_count",
            "next_attempt_at",
            "retry_requested_at",
            "last_status_code",
            "last_error",
            "dead_letter_reason",
            "ordering_key",
            "expires_at",
            "created_at",
            "updated_at",
        )


class RetrySerializer(serializers.Serializer):
    """Input of `POST /api/v1/deliveries/{id}/retry` (the body is optional)."""

    force = serializers.BooleanField(
        default=False,
        help_text="Retry an expired delivery too. A forced retry lifts the "
        "delivery's expiry.",
    )


class AttemptSerializer(serializers.ModelSerializer):
    """One attempt of a delivery."""

    class Meta:
        model = DeliveryAttempt
        fields = (
            "number",
            "started_at",
            "duration_ms",
            "outcome",
            "request_headers",
            "response_status",
            "response_headers",
            "response_body",
            "error",
        )


class DeliveryFilterSerializer(ConsumerFilterSerializer):
    """Query filters of the deliveries list (`consumer`: its endpoints')."""

    status = serializers.ChoiceField(choices=DeliveryStatus.choices, required=False)
    endpoint = serializers.UUIDField(required=False)
    event = serializers.UUIDField(required=False)


class DeadLetterFilterSerializer(serializers.Serializer):
    """Filters of the dead-letter list and replay."""

    endpoint = serializers.UUIDField(required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)


class ReplaySerializer(DeadLetterFilterSerializer):
    """Input of `POST /api/v1/dead-letters/replay`."""

    ids = serializers.ListField(
        child=serializers.UUIDField(), required=False, max_length=10_000
    )


class ReplayResultSerializer(serializers.Serializer):
    """How many dead letters were queued again, and what a next call would do."""

    replayed = serializers.IntegerField()
    remaining = serializers.IntegerField(
        required=False,
        help_text="Present when more match than one call replays "
        "(WEBHOOK_REPLAY_MAX): call again for the next batch. Counted up to "
        "1,000,000.",
    )
    skipped = serializers.IntegerField(
        required=False,
        help_text="Present when matching dead letters were left alone because "
        "their endpoint is inactive. Counted up to 1,000,000.",
    )


class EventFilterSerializer(ConsumerFilterSerializer):
    """Query filters of the events list."""

    event_type = serializers.CharField(max_length=255, required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
