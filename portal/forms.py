"""The portal's forms: parsing of what a browser posts; the rules are the API's.

Each form hands its values to the API's serializer for the same object, so an
endpoint, a test event or a recovery window is checked by one set of rules
(outbound address policy, event-type filters, payload limits) wherever it comes
from; the serializer's messages show beside the form's fields.
"""

import json
import re

from django import forms

from deliveries.api.endpoint_serializers import RecoverSerializer, TestEventSerializer
from subscriptions.api.serializers import EndpointSerializer
from webhooks_project.parsers import strict_loads

# Free-entry event types: separated by commas, spaces or line breaks.
SEPARATORS = re.compile(r"[\s,]+")
DATETIME_INPUT_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
# Most characters of a test event's payload typed in the form.
MAX_PAYLOAD_CHARS = 64 * 1024
# Most characters of a payload filter typed in the form (its JSON is then held to
# subscriptions.filters.MAX_FILTER_BYTES, compact).
MAX_FILTER_CHARS = 32 * 1024


def error_messages(detail) -> list[str]:
    """The messages of a DRF error detail, however nested, flattened."""
    if isinstance(detail, dict):
        return [
            message for value in detail.values() for message in error_messages(value)
        ]
    if isinstance(detail, list):
        return [message for value in detail for message in error_messages(value)]
    return [str(detail)]


def add_serializer_errors(form: forms.Form, errors: dict, fields: dict) -> None:
    """Show a serializer's errors on the form; `fields` maps its names to the form's."""
    for name, detail in errors.items():
        target = fields.get(name)
        for message in error_messages(detail):
            form.add_error(target if target in form.fields else None, message)


class EndpointForm(forms.Form):
    """An endpoint as the consumer edits it: URL, description, event types and
    payload filter."""

    url = forms.CharField(
        label="URL",
        max_length=2048,
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/webhooks"}),
    )
    description = forms.CharField(
        required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 2})
    )
    event_types = forms.MultipleChoiceField(
        label="Event types",
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    other_event_types = forms.CharField(
        label="Other types or filters",
        required=False,
        max_length=20_000,
        help_text="Separated by commas or spaces; a prefix ending in .* takes "
        "every type that starts with it (order.*). None at all: every type.",
        widget=forms.TextInput(attrs={"placeholder": "invoice.paid, order.*"}),
    )
    payload_filter = forms.CharField(
        label="Payload filter (JSON)",
        required=False,
        max_length=MAX_FILTER_CHARS,
        help_text='Only events whose payload matches, e.g. {"customer.country": '
        '"DE", "total": {"$gte": 100}}. Empty: every event of the types above.',
        widget=forms.Textarea(
            attrs={"rows": 4, "spellcheck": "false", "placeholder": "{}"}
        ),
    )

    def __init__(self, *args, suggestions: list[str], chosen: list[str] = (), **kwargs):
        """`suggestions`: the types offered as checkboxes, with those `chosen`."""
        super().__init__(*args, **kwargs)
        offered = sorted({*suggestions, *chosen} - {"*"})
        self.fields["event_types"].choices = [(name, name) for name in offered]

    def clean(self):
        """Check the endpoint as the API does; `endpoint_fields` is then set."""
        cleaned = super().clean()
        if self.errors:
            return cleaned
        typed = [
            item for item in SEPARATORS.split(cleaned["other_event_types"]) if item
        ]
        try:
            payload_filter = strict_loads(cleaned["payload_filter"] or "null")
        except (ValueError, RecursionError) as exc:
            self.add_error("payload_filter", f"Not valid JSON: {exc}.")
            return cleaned
        data = {
            "url": cleaned["url"],
            "description": cleaned["description"],
            "event_types": list(dict.fromkeys([*cleaned["event_types"], *typed])),
            "filter": payload_filter,
        }
        serializer = EndpointSerializer(data=data)
        if serializer.is_valid():
            self.endpoint_fields = dict(serializer.validated_data)
        else:
            add_serializer_errors(
                self,
                serializer.errors,
                {
                    "event_types": "other_event_types",
                    "url": "url",
                    "filter": "payload_filter",
                },
            )
        return cleaned

    @classmethod
    def initial_for(cls, endpoint) -> dict:
        """The form's values for an existing endpoint."""
        return {
            "url": endpoint.url,
            "description": endpoint.description,
            "event_types": list(endpoint.event_types),
            "payload_filter": ""
            if endpoint.filter is None
            else json.dumps(endpoint.filter, indent=2, ensure_ascii=False),
        }


class TestEventForm(forms.Form):
    """A test event: its type and payload, checked as a published event's are."""

    event_type = forms.CharField(
        label="Event type", max_length=255, initial="webhook.test"
    )
    payload = forms.CharField(
        label="Payload (JSON object)",
        required=False,
        max_length=MAX_PAYLOAD_CHARS,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "{}"}),
    )

    def clean(self):
        """Parse the payload and check both as `POST .../test` does."""
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            payload = strict_loads(cleaned["payload"] or "{}")
        except (ValueError, RecursionError) as exc:
            self.add_error("payload", f"Not valid JSON: {exc}.")
            return cleaned
        serializer = TestEventSerializer(
            data={"event_type": cleaned["event_type"], "payload": payload}
        )
        if not serializer.is_valid():
            add_serializer_errors(
                self,
                serializer.errors,
                {"event_type": "event_type", "payload": "payload"},
            )
            return cleaned
        self.test_fields = dict(serializer.validated_data)
        return cleaned


class RecoverForm(forms.Form):
    """A window of time whose missed events an endpoint should get (UTC)."""

    since = forms.DateTimeField(
        label="Since (UTC)",
        input_formats=DATETIME_INPUT_FORMATS,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    until = forms.DateTimeField(
        label="Until (UTC)",
        required=False,
        input_formats=DATETIME_INPUT_FORMATS,
        help_text="Empty: up to now.",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def clean(self):
        """Check the window as `POST .../recover` does."""
        cleaned = super().clean()
        if self.errors:
            return cleaned
        data = {"since": cleaned["since"]}
        if cleaned.get("until"):
            data["until"] = cleaned["until"]
        serializer = RecoverSerializer(data=data)
        if serializer.is_valid():
            self.recover_fields = dict(serializer.validated_data)
        else:
            add_serializer_errors(
                self, serializer.errors, {"since": "since", "until": "until"}
            )
        return cleaned
