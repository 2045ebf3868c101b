"""Admin for events: read-only, with each delivery of the event inline."""

from django.contrib import admin

from deliveries.admin.display import change_link, pretty_json
from deliveries.admin.filters import ConsumerListFilter
from deliveries.models import Delivery, Event
from tenants.admin import UUIDSearchMixin, is_uuid
from webhooks_project.admin_lists import LargeTableAdminMixin


class EventDeliveryInline(admin.TabularInline):
    """An event's deliveries, read-only, each linking to its own page."""

    model = Delivery
    fields = (
        "delivery_link",
        "endpoint",
        "status",
        "attempt_count",
        "last_status_code",
        "next_attempt_at",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "deliveries"

    @admin.display(description="delivery")
    def delivery_link(self, obj: Delivery):
        """The delivery's id, linking to its change page."""
        return change_link(obj)

    def get_queryset(self, request):
        """Fetch each endpoint with its delivery."""
        return super().get_queryset(request).select_related("endpoint")

    def has_add_permission(self, request, obj=None):
        """Deliveries are created by ingestion only."""
        return False

    def has_change_permission(self, request, obj=None):
        """Deliveries are never edited by hand."""
        return False


@admin.register(Event)
class EventAdmin(LargeTableAdminMixin, UUIDSearchMixin, admin.ModelAdmin):
    """Events as published: viewable, never added or edited here."""

    list_display = (
        "id",
        "event_type",
        "consumer",
        "ordering_key",
        "tenant",
        "created_at",
    )
    # A typed consumer (event_consumer_id), never a list of them.
    list_filter = (ConsumerListFilter,)
    list_select_related = ("tenant",)
    search_fields = ()
    search_help_text = "An exact event type, or a full event id."
    raw_id_fields = ("tenant",)
    sortable_by = ("id",)
    fields = (
        "id",
        "tenant",
        "event_type",
        "consumer",
        "idempotency_key",
        "request_hash",
        "created_at",
        "expires_at",
        "ordering_key",
        "payload_pretty",
    )
    readonly_fields = fields
    inlines = (EventDeliveryInline,)

    @admin.display(description="payload")
    def payload_pretty(self, obj: Event):
        """The payload as indented JSON."""
        return pretty_json(obj.payload)

    def get_search_results(self, request, queryset, search_term):
        """A UUID matches the id; anything else is an exact, indexed event type.

        A substring search would scan every event.
        """
        term = search_term.strip()
        if term and not is_uuid(term):
            return queryset.filter(event_type=term), False
        return super().get_search_results(request, queryset, search_term)

    def get_queryset(self, request):
        """Leave the payload out of list queries; a change page loads it on use."""
        return super().get_queryset(request).defer("payload")

    def has_add_permission(self, request):
        """Events arrive through the API only."""
        return False

    def has_change_permission(self, request, obj=None):
        """Events are immutable."""
        return False
