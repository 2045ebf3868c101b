"""Serializers for endpoints and their secrets."""

import re

from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers

from deliveries.envelope import RESERVED_HEADERS
from deliveries.flow import gate
from subscriptions.consumers import CONSUMER_RE, consumer_error
from subscriptions.filters import filter_errors
from subscriptions.matching import filter_error
from subscriptions.models import Endpoint
from subscriptions.secrets import secret_error
from subscriptions.urlcheck import MAX_URL_LENGTH, url_error

HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
MAX_HEADERS = 50
MAX_EVENT_TYPES = 256


@extend_schema_field(
    {"type": "string", "pattern": CONSUMER_RE.pattern, "maxLength": 128}
)
class ConsumerField(serializers.CharField):
    """A consumer id: 1-128 characters of [A-Za-z0-9_.:-]; a string, never coerced."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 128)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        """Only a JSON string of the allowed characters."""
        if not isinstance(data, str):
            self.fail("invalid")
        value = super().to_internal_value(data)
        error = consumer_error(value)
        if error:
            raise serializers.ValidationError(error)
        return value


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "additionalProperties": True,
        "example": {"customer.country": {"$in": ["DE", "AT"]}, "total": {"$gte": 100}},
    }
)
class PayloadFilterField(serializers.JSONField):
    """An endpoint's payload filter: a JSON object of conditions, or null."""

    def to_internal_value(self, data):
        """The filter as given, when its rules hold (each problem named with its
        place in the filter)."""
        value = super().to_internal_value(data)
        errors = filter_errors(value)
        if errors:
            raise serializers.ValidationError(errors)
        return value


class ConsumerFilterSerializer(serializers.Serializer):
    """`?consumer=`: one consumer's objects only."""

    consumer = ConsumerField(required=False)


class CircuitSerializer(serializers.Serializer):
    """An endpoint's circuit breaker and pause state."""

    state = serializers.ChoiceField(choices=("closed", "open", "unknown"))
    failures = serializers.IntegerField(allow_null=True)
    open_until_ms = serializers.IntegerField(allow_null=True, required=False)
    paused_until_ms = serializers.IntegerField(allow_null=True, required=False)


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Orders",
            value={
                "url": "https://example.com/webhooks",
                "description": "order events",
                "event_types": ["order.*"],
                "filter": {"customer.country": "DE", "total": {"$gte": 100}},
                "headers": {"X-Team": "billing"},
                "rate_limit": 10,
            },
            request_only=True,
        )
    ]
)
class EndpointSerializer(serializers.ModelSerializer):
    """An endpoint as read and written through the API."""

    url = serializers.CharField(max_length=MAX_URL_LENGTH)
    consumer = ConsumerField(
        allow_null=True,
        required=False,
        help_text="The producer's customer this endpoint belongs to; events "
        "published with a consumer go to that consumer's endpoints only.",
    )
    description = serializers.CharField(
        max_length=10_000, allow_blank=True, required=False
    )
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=255),
        max_length=MAX_EVENT_TYPES,
        required=False,
    )
    filter = PayloadFilterField(
        allow_null=True,
        required=False,
        help_text="Conditions on the event's payload: only events that match "
        "are delivered to this endpoint (null: every payload). Keys are dotted "
        "paths to a value (equality) or to an object of operators ($eq, $neq, "
        '$gt, $gte, $lt, $lte, $in, $nin, $exists); "$and" and "$or" take lists '
        "of such objects; every key of an object must hold. See docs/filters.md.",
    )
    headers = serializers.DictField(
        child=serializers.CharField(max_length=4096, allow_blank=True),
        required=False,
    )
    rate_limit = serializers.IntegerField(
        min_value=1, max_value=1_000_000, allow_null=True, required=False
    )
    secret = serializers.CharField(write_only=True, required=False, max_length=128)
    circuit = serializers.SerializerMethodField()

    class Meta:
        model = Endpoint
        fields = (
            "id",
            "url",
            "consumer",
            "description",
            "event_types",
            "filter",
            "headers",
            "rate_limit",
            "max_in_flight",
            "is_active",
            "disabled_reason",
            "failing_since",
            "circuit",
            "secret",
            "created_at",
            "updated_at",
        )
        read_only_fields = (
            "id",
            "disabled_reason",
            "failing_since",
            "created_at",
            "updated_at",
        )

    @extend_schema_field(CircuitSerializer)
    def get_circuit(self, endpoint: Endpoint) -> dict:
        """The endpoint's circuit breaker, as flow control sees it now."""
        return gate.circuit(endpoint.pk)

    def validate_url(self, value: str) -> str:
        """Scheme, shape and outbound address policy."""
        error = url_error(value)
        if error:
            raise serializers.ValidationError(error)
        return value

    def validate_event_types(self, value: list[str]) -> list[str]:
        """Exact types, `*`, or `prefix.*` wildcards."""
        errors = [error for error in map(filter_error, value) if error]
        if errors:
            raise serializers.ValidationError(errors)
        return value

    def validate_headers(self, value: dict[str, str]) -> dict[str, str]:
        """Valid header names and values that do not touch the platform's headers."""
        if len(value) > MAX_HEADERS:
            raise serializers.ValidationError(f"At most {MAX_HEADERS} headers.")
        for name, header_value in value.items():
            if not HEADER_NAME_RE.fullmatch(name):
                raise serializers.ValidationError(
                    f"'{name}' is not a valid header name."
                )
            if name.lower() in RESERVED_HEADERS:
                raise serializers.ValidationError(
                    f"'{name}' is set by the platform and cannot be overridden."
                )
            if any(char in header_value for char in "\r\n\x00"):
                raise serializers.ValidationError(
                    f"The value of '{name}' contains a line break or NUL."
                )
        return value

    def validate_secret(self, value: str) -> str:
        """`whsec_` + base64 of 24 to 64 bytes."""
        error = secret_error(value)
        if error:
            raise serializers.ValidationError(error)
        return value


class EndpointCreatedSerializer(EndpointSerializer):
    """A new endpoint, with its secret."""

    secret = serializers.CharField(read_only=True)


class SecretSerializer(serializers.Serializer):
    """An endpoint's current secret (or, rotating, the new one to use)."""

    secret = serializers.CharField(required=False, max_length=128)

    def validate_secret(self, value: str) -> str:
        """`whsec_` + base64 of 24 to 64 bytes."""
        error = secret_error(value)
        if error:
            raise serializers.ValidationError(error)
        return value
