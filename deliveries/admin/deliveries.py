"""Admin for deliveries: read-only, with their attempts and a retry action."""

from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.translation import ngettext

from deliveries.admin.display import EMPTY, pretty_body, pretty_json
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from deliveries.services.scheduling import DeliveryExpired, delivery_requeue
from tenants.admin import UUIDSearchMixin
from webhooks_project.admin_lists import (
    MORE_SELECTED,
    LargeTableAdminMixin,
    action_rows,
)

# The deliveries admin's own styles (attempt rows, the replay confirmation).
ADMIN_MEDIA_CSS = {"all": ("deliveries/admin.css",)}
# Characters of a response body shown in an attempt's row.
EXCERPT_CHARS = 160

# A delivery's page: what happened first, the scheduling's bookkeeping folded.
DELIVERY_FIELDSETS = (
    (
        None,
        {
            "fields": (
                ("id", "status"),
                "tenant",
                "event",
                "endpoint",
                ("attempt_count", "last_status_code"),
                "last_error",
                "dead_letter_reason",
                ("created_at", "succeeded_at", "dead_lettered_at"),
                "expires_at",
                ("ordering_key", "sequence"),
            )
        },
    ),
    (
        "Scheduling",
        {
            "classes": ("collapse",),
            "fields": (
                "round_start",
                "next_attempt_at",
                "lease_expires_at",
                "parked_at",
                "retry_requested_at",
                "updated_at",
            ),
        },
    ),
)
# Every field of a delivery (all read-only).
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
    "expires_at",
    "ordering_key",
    "sequence",
    "parked_at",
    "created_at",
    "updated_at",
)


class DeliveryAttemptInline(admin.TabularInline):
    """A delivery's attempts, one row each; headers and body behind a toggle."""

    model = DeliveryAttempt
    fields = (
        "number",
        "started_at",
        "outcome",
        "response_status",
        "duration",
        "excerpt",
        "details",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    classes = ("attempts",)

    @admin.display(description="duration")
    def duration(self, obj: DeliveryAttempt) -> str:
        """How long the exchange took."""
        return f"{obj.duration_ms} ms"

    @admin.display(description="response (excerpt) or error")
    def excerpt(self, obj: DeliveryAttempt) -> str:
        """The start of the stored response body, else the error."""
        text = " ".join((obj.response_body or obj.error).split())
        if len(text) > EXCERPT_CHARS:
            return text[: EXCERPT_CHARS - 1] + "…"
        return text or EMPTY

    @admin.display(description="headers and body")
    def details(self, obj: DeliveryAttempt):
        """Request and response headers (credentials redacted) and the whole body."""
        return format_html(
            "<details><summary>show</summary>"
            "<h4>request headers</h4>{}<h4>response headers</h4>{}"
            "<h4>response body</h4>{}{}</details>",
            pretty_json(obj.request_headers),
            pretty_json(obj.response_headers),
            pretty_body(obj.response_body),
            format_html("<h4>error</h4><pre>{}</pre>", obj.error) if obj.error else "",
        )

    def has_view_permission(self, request, obj=None):
        """Whoever may see a delivery sees its attempts (no permission of their own)."""
        return (
            super().has_view_permission(request, obj)
            or request.user.has_perm("deliveries.view_delivery")
            or request.user.has_perm("deliveries.change_delivery")
        )

    def has_add_permission(self, request, obj=None):
        """Attempts are recorded by workers only."""
        return False

    def has_change_permission(self, request, obj=None):
        """Attempts are a record: never edited."""
        return False


class DeliveryAdminMixin:
    """What the deliveries and dead-letter admins share: their list columns (read
    through the select_related event and endpoint), their page, and no edits by
    hand."""

    fieldsets = DELIVERY_FIELDSETS
    readonly_fields = DELIVERY_FIELDS
    inlines = (DeliveryAttemptInline,)

    class Media:
        css = ADMIN_MEDIA_CSS

    def has_add_permission(self, request):
        """Deliveries are created by ingestion only."""
        return False

    def has_change_permission(self, request, obj=None):
        """Deliveries are driven by workers; only the actions move them."""
        return False

    def has_delete_permission(self, request, obj=None):
        """Deliveries end succeeded, dead-lettered or expired; retention deletes."""
        return False

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
    LargeTableAdminMixin, DeliveryAdminMixin, UUIDSearchMixin, admin.ModelAdmin
):
    """Deliveries: viewable, never added or edited, retried by an action."""

    list_display = (
        "id",
        "event_type",
        "endpoint_url",
        "status",
        "ordering_key",
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
    actions = ("retry_now", "retry_now_forced")

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
        fails, the next one follows at once. Expired ones are left as they are.
        """
        self._retry(request, queryset, force=False)

    @admin.action(
        description="Retry selected now, expired ones too", permissions=["retry"]
    )
    def retry_now_forced(self, request, queryset):
        """As "Retry selected now", and expired deliveries no longer expire."""
        self._retry(request, queryset, force=True)

    def _retry(self, request, queryset, *, force: bool) -> None:
        queued = noted = expired = 0
        deliveries, more = action_rows(queryset)
        for delivery in deliveries:
            try:
                requeued = delivery_requeue(delivery=delivery, force=force)
            except Delivery.DoesNotExist:  # purged (retention) since the list
                continue
            except DeliveryExpired:
                expired += 1
                continue
            if requeued.status == DeliveryStatus.PENDING:
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
        if expired:
            message += ngettext(
                " %d had expired and was left as it is (retry it with "
                "“expired ones too”).",
                " %d had expired and were left as they are (retry them with "
                "“expired ones too”).",
                expired,
            ) % (expired,)
        if more:
            message += MORE_SELECTED
        self.message_user(request, message, messages.SUCCESS)

    def has_retry_permission(self, request):
        """Retrying needs the permission to change deliveries."""
        return request.user.has_perm("deliveries.change_delivery")
