"""Django admin for endpoints: edited through the services, secrets shown masked."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils.translation import ngettext

from deliveries.admin.display import replay_message
from deliveries.admin.filters import ConsumerListFilter
from deliveries.flow import gate
from deliveries.services.endpoint_health import endpoint_change, endpoint_replay_missed
from deliveries.services.replay import ReplayResult
from deliveries.services.test_events import endpoint_send_test
from subscriptions.api.serializers import EndpointSerializer
from subscriptions.models import Endpoint, EndpointSecret
from subscriptions.services import (
    UPDATABLE_FIELDS,
    EndpointInactive,
    endpoint_create,
    endpoint_delete,
    endpoint_limit_check,
    endpoint_rotate_secret,
)
from tenants.admin import UUIDSearchMixin
from webhooks_project.admin_lists import MORE_SELECTED, action_rows

MASKED_SECRET_CHARS = 10


def _error_messages(errors) -> list[str]:
    """Flatten DRF's nested error structure into a list of messages."""
    if isinstance(errors, dict):
        return [
            message for value in errors.values() for message in _error_messages(value)
        ]
    if isinstance(errors, list | tuple):
        return [message for value in errors for message in _error_messages(value)]
    return [str(errors)]


class EndpointAdminForm(forms.ModelForm):
    """The endpoint form, validated by the same rules as the API."""

    class Meta:
        model = Endpoint
        fields = ("tenant", *UPDATABLE_FIELDS)

    def clean(self):
        """Run the API serializer's field validation on the submitted values."""
        cleaned = super().clean()
        if "headers" in cleaned and cleaned["headers"] in (None, ""):
            cleaned["headers"] = {}  # an emptied box means "no headers"
        data = {
            name: cleaned[name]
            for name in UPDATABLE_FIELDS
            if name in self.fields and name in cleaned
        }
        serializer = EndpointSerializer(data=data, partial=True)
        if not serializer.is_valid():
            for name, errors in serializer.errors.items():
                field = name if name in self.fields else None
                self.add_error(field, _error_messages(errors))
        tenant = cleaned.get("tenant") or getattr(self.instance, "tenant", None)
        if tenant is not None and cleaned.get("url"):
            # The service checks again under the tenant's lock; this one makes
            # the common case a form error rather than an error page.
            adding = self.instance._state.adding
            try:
                endpoint_limit_check(
                    tenant=tenant,
                    url=cleaned["url"],
                    endpoint_id=None if adding else self.instance.pk,
                )
            except ValidationError as exc:
                self.add_error(
                    "url" if hasattr(exc, "error_dict") else "tenant", exc.messages
                )
        return cleaned


class EndpointSecretInline(admin.TabularInline):
    """An endpoint's signing secrets, read-only and masked."""

    model = EndpointSecret
    fields = ("masked_secret", "created_at", "expires_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="secret")
    def masked_secret(self, obj: EndpointSecret) -> str:
        """The first characters of the secret only."""
        return obj.secret[:MASKED_SECRET_CHARS] + "…"

    def has_add_permission(self, request, obj=None):
        """Secrets come from endpoint creation and the rotate action only."""
        return False


@admin.register(Endpoint)
class EndpointAdmin(UUIDSearchMixin, admin.ModelAdmin):
    """Endpoints: created and updated through the services, with secret rotation."""

    form = EndpointAdminForm
    list_display = (
        "url",
        "tenant",
        "consumer",
        "is_active",
        "disabled_reason",
        "circuit_state",
        "failing_since",
        "event_types_display",
        "rate_limit",
        "created_at",
    )
    list_filter = ("is_active", ConsumerListFilter)
    list_select_related = ("tenant",)
    search_fields = ("url",)
    search_help_text = "URL, or a full endpoint id."
    autocomplete_fields = ("tenant",)
    fields = (
        "id",
        "tenant",
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
        "disabled_at",
        "failing_since",
        "circuit_state",
        "created_at",
        "updated_at",
    )
    readonly_fields = (
        "id",
        "disabled_reason",
        "disabled_at",
        "failing_since",
        "circuit_state",
        "created_at",
        "updated_at",
    )
    inlines = (EndpointSecretInline,)
    actions = ("rotate_secret", "replay_missed", "send_test_event")

    def get_queryset(self, request):
        """Endpoints not deleted (deleted ones wait for the cleanup to purge them)."""
        return super().get_queryset(request).filter(deleted_at__isnull=True)

    def delete_model(self, request, obj):
        """Delete through the service: its rows are purged later, in batches."""
        endpoint_delete(endpoint=obj)

    def delete_queryset(self, request, queryset):
        """Delete each through the service (bounded work for this request)."""
        endpoints, more = action_rows(queryset)
        for endpoint in endpoints:
            endpoint_delete(endpoint=endpoint)
        if more:
            self.message_user(request, MORE_SELECTED.strip(), messages.WARNING)

    def get_deleted_objects(self, objs, request):
        """The endpoints only: Django would list every delivery and attempt."""
        endpoints = [str(endpoint) for endpoint in objs]
        return endpoints, {"endpoints": len(endpoints)}, set(), []

    @admin.display(description="circuit")
    def circuit_state(self, obj: Endpoint) -> str:
        """The circuit breaker's state and consecutive failures (from Redis)."""
        circuit = gate.circuit(obj.pk)
        return f"{circuit['state']} ({circuit['failures']} failures)"

    @admin.display(description="event types")
    def event_types_display(self, obj: Endpoint) -> str:
        """The endpoint's filters, or "all" when it takes every type."""
        return ", ".join(obj.event_types) or "all"

    def get_readonly_fields(self, request, obj=None):
        """An existing endpoint cannot move to another tenant."""
        readonly = super().get_readonly_fields(request, obj)
        return readonly if obj is None else (*readonly, "tenant")

    def save_model(self, request, obj, form, change):
        """Create or update through the services (a new endpoint gets its secret)."""
        data = {
            name: form.cleaned_data[name]
            for name in UPDATABLE_FIELDS
            if name in form.cleaned_data
        }
        if change:
            changes = {
                name: value for name, value in data.items() if name in form.changed_data
            }
            if changes:
                # A fresh row: the form already set the new values on `obj`.
                endpoint_change(
                    endpoint=Endpoint.objects.get(pk=obj.pk), changes=changes
                )
        else:
            created = endpoint_create(tenant=form.cleaned_data["tenant"], **data)
            obj.pk = created.pk
            obj._state.adding = False
        obj.refresh_from_db()

    @admin.action(description="Replay what it missed", permissions=["change"])
    def replay_missed(self, request, queryset):
        """Replay deliveries dead-lettered while each selected endpoint was off."""
        endpoints, more = action_rows(queryset)
        results = []
        for endpoint in endpoints:  # WEBHOOK_REPLAY_MAX in all, not per endpoint
            budget = settings.WEBHOOK_REPLAY_MAX - sum(r.replayed for r in results)
            results.append(endpoint_replay_missed(endpoint=endpoint, limit=budget))
        message = replay_message(ReplayResult.total(results))
        self.message_user(
            request, message + (MORE_SELECTED if more else ""), messages.SUCCESS
        )

    @admin.action(description="Rotate secret", permissions=["change"])
    def rotate_secret(self, request, queryset):
        """Give each selected endpoint a new secret; the old one signs for a while."""
        endpoints, more = action_rows(queryset)
        for endpoint in endpoints:
            endpoint_rotate_secret(endpoint=endpoint)
        rotated = len(endpoints)
        self.message_user(
            request,
            ngettext(
                "Rotated the secret of %d endpoint.",
                "Rotated the secrets of %d endpoints.",
                rotated,
            )
            % rotated
            + (MORE_SELECTED if more else ""),
            messages.SUCCESS,
        )

    @admin.action(description="Send a test event", permissions=["change"])
    def send_test_event(self, request, queryset):
        """Send a `webhook.test` event to each selected active endpoint."""
        endpoints, more = action_rows(queryset)
        sent = skipped = 0
        for endpoint in endpoints:
            try:
                endpoint_send_test(endpoint=endpoint)
            except EndpointInactive:
                skipped += 1
            else:
                sent += 1
        message = (
            ngettext(
                "Sent a test event to %d endpoint.",
                "Sent a test event to %d endpoints.",
                sent,
            )
            % sent
        )
        if skipped:
            message += (
                ngettext(
                    " Skipped %d inactive endpoint.",
                    " Skipped %d inactive endpoints.",
                    skipped,
                )
                % skipped
            )
        self.message_user(
            request,
            message + (MORE_SELECTED if more else ""),
            messages.WARNING if skipped or more else messages.SUCCESS,
        )
