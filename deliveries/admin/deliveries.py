"""Admin for deliveries: read-only, with their attempts and a retry action."""

from django.contrib import admin, messages
from django.utils.translation import ngettext

from deliveries.admin.display import pretty_body, pretty_json
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from deliveries.services.scheduling import delivery_requeue
from tenants.admin import UUIDSearchMixin
from webhooks_project.admin_lists import (
    MORE_SELECTED,
    LargeTableAdminMixin,
    action_rows,
)

# Every field of a delivery, in page order (all read-only).
DELIVERY_FIELDS = (
    "id",
    "tenant",
    "event",
    "endpoint",
    "status",
    "attempt_count",
    "round_start",
    "next_attempt_at",
    "lease_expires_at",
    "retry_requested_at",
    "last_status_code",
    "last_error",
    "dead_letter_reason",
    "succeeded_at",
    "dead_lettered_at",
    "created_at",
    "updated_at",
)


class DeliveryAttemptInline(admin.StackedInline):
    """A delivery's attempts, read-only, with headers and body pretty-printed."""

    model = DeliveryAttempt
    fields = (
        "number",
        "started_at",
        "duration_ms",
        "outcome",
        "response_status",
        "error",
        "request_headers_pretty",
        "response_headers_pretty",
        "response_body_pretty",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="request headers")
    def request_headers_pretty(self, obj: DeliveryAttempt):
        """The request headers sent (credentials redacted) as indented JSON."""
        return pretty_json(obj.request_headers)

    @admin.display(description="response headers")
    def response_headers_pretty(self, obj: DeliveryAttempt):
        """The response headers as indented JSON."""
        return pretty_json(obj.response_headers)

    @admin.display(description="response body")
    def response_body_pretty(self, obj: DeliveryAttempt):
        """The stored (truncated) response body, indented when it is JSON."""
        return pretty_body(obj.response_body)

    def has_add_permission(self, request, obj=None):
        """Attempts are recorded by workers only."""
        return False

    def has_change_permission(self, request, obj=None):
        """Attempts are a record: never edited."""
        return False


class DeliveryDisplayMixin:
    """List columns read through the delivery's select_related event and endpoint."""

    @admin.display(description="event type")
    def event_type(self, obj: Delivery) -> str:
        """The event's type."""
        return obj.event.event_type

    @admin.display(description="endpoint URL")
    def endpoint_url(self, obj: Delivery) -> str:
        """The endpoint's URL."""
        return obj.endpoint.url


@admin.register(Delivery)
class DeliveryAdmin(
    LargeTableAdminMixin, DeliveryDisplayMixin, UUIDSearchMixin, admin.ModelAdmin
):
    """Deliveries: viewable, never added or edited, retried by an action."""

    list_display = (
        "id",
        "event_type",
        "endpoint_url",
        "status",
        "attempt_count",
        "last_status_code",
        "next_attempt_at",
        "updated_at",
    )
    list_filter = ("status",)
    list_select_related = ("event", "endpoint")
    search_fields = ()
    uuid_search_fields = ("pk", "event_id")
    search_help_text = "A full delivery id or event id."
    # Sorted by the primary key only (the status filter has its own index).
    sortable_by = ("id",)
    raw_id_fields = ("tenant", "event", "endpoint")
    fields = DELIVERY_FIELDS
    readonly_fields = DELIVERY_FIELDS
    inlines = (DeliveryAttemptInline,)
    actions = ("retry_now",)

    def get_queryset(self, request):
        """Join the event and endpoint, leaving the event payload out."""
        return (
            super()
            .get_queryset(request)
            .select_related("event", "endpoint")
            .defer("event__payload")
        )

    @admin.action(description="Retry selected now", permissions=["retry"])
    def retry_now(self, request, queryset):
        """Queue each selected delivery again now (a final one starts a new round).

        One being attempted right now is not sent twice at once: if that attempt
        fails, the next one follows at once.
        """
        queued = noted = 0
        deliveries, more = action_rows(queryset)
        for delivery in deliveries:
            if delivery_requeue(delivery=delivery).status == DeliveryStatus.PENDING:
                queued += 1
            else:
                noted += 1
        message = ngettext(
            "Queued %d delivery for retry now.",
            "Queued %d deliveries for retry now.",
            queued,
        ) % (queued,)
        if noted:
            message += ngettext(
                " %d was being attempted: if that attempt fails, the next one"
                " follows at once.",
                " %d were being attempted: if those attempts fail, the next ones"
                " follow at once.",
                noted,
            ) % (noted,)
        if more:
            message += MORE_SELECTED
        self.message_user(request, message, messages.SUCCESS)

    def has_retry_permission(self, request):
        """Retrying needs the permission to change deliveries."""
        return request.user.has_perm("deliveries.change_delivery")

    def has_add_permission(self, request):
        """Deliveries are created by ingestion only."""
        return False

    def has_delete_permission(self, request, obj=None):
        """Deliveries end as succeeded or dead letters; retention deletes them."""
        return False

    def has_change_permission(self, request, obj=None):
        """Deliveries are driven by workers; only actions move them."""
        return False
