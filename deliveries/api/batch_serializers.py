"""Serializers of `POST /api/v1/events/batch`."""

import json

from django.conf import settings
from rest_framework import serializers

from deliveries.api.serializers import EventAcceptedSerializer, EventCreateSerializer

# Items of one batch at most (API.md: 1-100).
BATCH_MAX_EVENTS = 100


class EventBatchItemSerializer(EventCreateSerializer):
    """One item: an event as `POST /api/v1/events` takes it, every rule included.

    Its payload keeps the single event's size limit, WEBHOOK_MAX_PAYLOAD_BYTES,
    counted on its JSON (the batch's body has a larger limit of its own).
    """

    def validate_payload(self, value):
        """The single event's rules, then its size limit."""
        value = super().validate_payload(value)
        limit = settings.WEBHOOK_MAX_PAYLOAD_BYTES
        if len(json.dumps(value, ensure_ascii=False).encode()) > limit:
            raise serializers.ValidationError(
                f"Over {limit} bytes as JSON, a single event's limit "
                "(WEBHOOK_MAX_PAYLOAD_BYTES)."
            )
        return value


class BatchEventsField(serializers.ListField):
    """A list of batch items whose errors are keyed by their index.

    Too long a list is refused before any item is validated.
    """

    def to_internal_value(self, data):
        """Refuse over max_length items at once, then validate each."""
        if isinstance(data, list) and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


class EventBatchSerializer(serializers.Serializer):
    """Input of `POST /api/v1/events/batch`.

    An invalid item answers 400 as `{"events": {"<index>": {field: [...]}}}`.
    """

    events = BatchEventsField(
        child=EventBatchItemSerializer(),
        min_length=1,
        max_length=BATCH_MAX_EVENTS,
        help_text=f"1-{BATCH_MAX_EVENTS} events, each as `POST /api/v1/events` "
        "takes it (`event_id` is the item's idempotency key).",
    )


class EventBatchResultSerializer(EventAcceptedSerializer):
    """One item's answer: its event (the original one for a repeat)."""

    created = serializers.BooleanField(
        help_text="False when the item repeated an `event_id` (of an earlier "
        "event or an earlier item) with the same body: nothing was delivered "
        "again."
    )

    def to_representation(self, instance) -> dict:
        """The event's answer and whether this item created it."""
        return super().to_representation(instance) | {"created": instance.created}


class EventBatchAcceptedSerializer(serializers.Serializer):
    """The answer to an accepted batch: one result per item, in order."""

    results = EventBatchResultSerializer(many=True)
