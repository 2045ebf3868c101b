"""Serializers of the event-type catalog."""

from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers

from catalog.models import EventType
from deliveries.api.serializers import EventTypeField, StrictCharField

# Field shapes only: the rules on names, schemas and examples are the services'.


@extend_schema_field({"type": "object", "additionalProperties": {}, "nullable": True})
class JsonObjectField(serializers.JSONField):
    """A JSON object or null (anything else is a 400 from the services)."""


class StrictBooleanField(serializers.BooleanField):
    """true or false, never "yes" or 1."""

    def to_internal_value(self, data):
        """Only JSON booleans."""
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Order created",
            value={
                "name": "order.created",
                "description": "An order was placed.",
                "schema": {
                    "type": "object",
                    "required": ["id", "total"],
                    "properties": {
                        "id": {"type": "string"},
                        "total": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{2}$"},
                    },
                },
                "example": {"id": "ord_1", "total": "39.80"},
            },
            request_only=True,
        )
    ]
)
class EventTypeSerializer(serializers.ModelSerializer):
    """An event type as read and written through the API."""

    name = EventTypeField(
        max_length=255,
        trim_whitespace=False,
        help_text="The event type; it never changes (a PATCH of another name "
        "is a 400). Types starting with `platform.` are the platform's.",
    )
    description = StrictCharField(max_length=10_000, allow_blank=True, required=False)
    schema = JsonObjectField(
        allow_null=True,
        required=False,
        help_text="A JSON Schema (draft 2020-12) that payloads of this type must "
        "follow at publish (400 otherwise), or null. References stay inside it "
        "(`#...`); at most 64 KiB.",
    )
    example = JsonObjectField(
        allow_null=True,
        required=False,
        help_text="A payload of this type; it must follow the schema.",
    )
    deprecated = StrictBooleanField(
        required=False,
        help_text="Still published and checked; hidden from the consumer portal.",
    )

    class Meta:
        model = EventType
        fields = (
            "name",
            "description",
            "schema",
            "example",
            "deprecated",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("created_at", "updated_at")
