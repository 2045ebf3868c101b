"""Django admin for the event-type catalog: written through the services, schemas
and examples shown indented."""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils.html import format_html

from catalog.models import EventType
from catalog.services import (
    UPDATABLE_FIELDS,
    event_type_content_check,
    event_type_create,
    event_type_delete,
    event_type_limit_check,
    event_type_name_check,
    event_type_update,
)
from webhooks_project.admin_lists import MORE_SELECTED, action_rows
from webhooks_project.parsers import StrictJSONDecoder


class IndentedJSONField(forms.JSONField):
    """A JSON box that shows its value indented, one key a line, and refuses
    what no JSON column holds (NaN, 1e400)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("decoder", StrictJSONDecoder)
        super().__init__(**kwargs)

    def prepare_value(self, value):
        """Indented JSON (Django's own writes it on one line)."""
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class EventTypeAdminForm(forms.ModelForm):
    """An event type, checked by the services' rules before it is saved."""

    schema = IndentedJSONField(
        required=False, widget=forms.Textarea(attrs={"rows": 16, "cols": 80})
    )
    example = IndentedJSONField(
        required=False, widget=forms.Textarea(attrs={"rows": 10, "cols": 80})
    )

    class Meta:
        model = EventType
        fields = ("tenant", "name", *UPDATABLE_FIELDS)

    def clean(self):
        """The name, limit, schema and example rules of the API."""
        cleaned = super().clean()
        adding = self.instance._state.adding
        self._check(
            event_type_content_check,
            schema=cleaned.get("schema"),
            example=cleaned.get("example"),
        )
        if adding and cleaned.get("name"):
            self._check(event_type_name_check, name=cleaned["name"])
        if adding and cleaned.get("tenant"):
            self._check(event_type_limit_check, tenant=cleaned["tenant"])
        return cleaned

    def _check(self, check, **kwargs) -> None:
        try:
            check(**kwargs)
        except ValidationError as exc:
            if not hasattr(exc, "error_dict"):
                self.add_error(None, exc.messages)
                return
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)


@admin.register(EventType)
class EventTypeAdmin(admin.ModelAdmin):
    """Each tenant's event types: by tenant and name, deprecated ones apart."""

    form = EventTypeAdminForm
    list_display = ("name", "tenant", "deprecated", "has_schema", "updated_at")
    list_filter = ("deprecated", ("tenant", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("tenant",)
    search_fields = ("name",)
    search_help_text = "Event type name (or part of it)."
    autocomplete_fields = ("tenant",)
    ordering = ("tenant__name", "name")
    readonly_fields = ("schema_display", "example_display", "created_at", "updated_at")

    def get_fields(self, request, obj=None):
        """Editable boxes, then the schema and example as consumers read them."""
        fields = ["tenant", "name", *UPDATABLE_FIELDS]
        if obj is not None:
            fields += ["schema_display", "example_display", "created_at", "updated_at"]
        return fields

    def get_readonly_fields(self, request, obj=None):
        """A type's tenant and name are its identity: set once."""
        readonly = super().get_readonly_fields(request, obj)
        return readonly if obj is None else (*readonly, "tenant", "name")

    @admin.display(boolean=True, description="schema")
    def has_schema(self, obj: EventType) -> bool:
        """Whether payloads of this type are checked at publish."""
        return obj.schema is not None

    @admin.display(description="schema (as shown)")
    def schema_display(self, obj: EventType) -> str:
        """The schema, indented."""
        return _pretty(obj.schema)

    @admin.display(description="example (as shown)")
    def example_display(self, obj: EventType) -> str:
        """The example payload, indented."""
        return _pretty(obj.example)

    def save_model(self, request, obj, form, change):
        """Create or update through the services (they bump the catalog version)."""
        data = {name: form.cleaned_data.get(name) for name in UPDATABLE_FIELDS}
        if change:
            changes = {k: v for k, v in data.items() if k in form.changed_data}
            event_type_update(event_type=obj, **changes)
            return
        created = event_type_create(
            tenant=form.cleaned_data["tenant"],
            name=form.cleaned_data["name"],
            **{k: v for k, v in data.items() if v is not None},
        )
        obj.pk = created.pk

    def delete_model(self, request, obj):
        """Delete through the service."""
        event_type_delete(event_type=obj)

    def delete_queryset(self, request, queryset):
        """Delete each through the service (bounded work for this request)."""
        event_types, more = action_rows(queryset)
        for event_type in event_types:
            event_type_delete(event_type=event_type)
        if more:
            self.message_user(request, MORE_SELECTED.strip(), messages.WARNING)


def _pretty(value) -> str:
    if value is None:
        return "—"
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return format_html('<pre class="catalog-json">{}</pre>', text)
