"""Admin for the dead-letter queue: replay selected rows or everything matching."""

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from deliveries.admin.deliveries import (
    DELIVERY_FIELDS,
    DeliveryAttemptInline,
    DeliveryDisplayMixin,
)
from deliveries.admin.display import replay_message
from deliveries.models import DeadLetter, DeliveryStatus
from deliveries.services.replay import dead_letters_replay
from tenants.admin import UUIDSearchMixin
from webhooks_project.admin_lists import LargeTableAdminMixin

# Query parameters of the changelist that do not narrow what matches.
NON_FILTER_PARAMS = ("p", "e")


class TenantListFilter(admin.RelatedOnlyFieldListFilter):
    """Tenants that have dead letters; always applied when chosen.

    Django drops a related filter with fewer than two choices from the query, so
    a chosen tenant would be ignored (and "replay all matching" would replay
    every tenant's dead letters) once only one tenant has any left.
    """

    def has_output(self) -> bool:
        """Always take part in the query."""
        return True


@admin.register(DeadLetter)
class DeadLetterAdmin(
    LargeTableAdminMixin, DeliveryDisplayMixin, UUIDSearchMixin, admin.ModelAdmin
):
    """Dead-lettered deliveries, replayable by selection or by the current filter."""

    list_display = (
        "id",
        "endpoint_url",
        "tenant",
        "dead_letter_reason",
        "attempt_count",
        "last_status_code",
        "dead_lettered_at",
    )
    list_filter = (("tenant", TenantListFilter), "dead_lettered_at")
    list_select_related = ("endpoint", "tenant")
    search_fields = ()
    uuid_search_fields = ("pk", "event_id", "endpoint_id")
    search_help_text = "A full delivery, event or endpoint id."
    # Sorted by the date the dead-letter index orders only. The list is always
    # filtered (status), so it is counted exactly, on that partial index.
    sortable_by = ("dead_lettered_at",)
    ordering = ("-dead_lettered_at",)
    fields = DELIVERY_FIELDS
    readonly_fields = DELIVERY_FIELDS
    inlines = (DeliveryAttemptInline,)
    actions = ("replay_selected",)

    def get_queryset(self, request):
        """Dead-lettered deliveries only."""
        return super().get_queryset(request).filter(status=DeliveryStatus.DEAD_LETTER)

    def get_urls(self):
        """Add the POST-only "replay all matching" URL before the object URLs."""
        name = f"{self.opts.app_label}_{self.opts.model_name}_replay_matching"
        view = self.admin_site.admin_view(require_POST(self.replay_matching_view))
        return [
            path("replay-matching/", view, name=name),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        """The changelist, telling the template whether to show the replay button."""
        extra_context = {
            **(extra_context or {}),
            "has_replay_permission": self.has_replay_permission(request),
        }
        return super().changelist_view(request, extra_context=extra_context)

    @admin.action(description="Replay selected", permissions=["replay"])
    def replay_selected(self, request, queryset):
        """Replay the selected dead letters."""
        result = dead_letters_replay(queryset=queryset)
        self.message_user(request, replay_message(result), messages.SUCCESS)

    def replay_matching_view(self, request):
        """Replay every dead letter the changelist's filters and search match."""
        if not self.has_replay_permission(request):
            raise PermissionDenied
        request.GET = request.GET.copy()
        for name in NON_FILTER_PARAMS:
            request.GET.pop(name, None)
        changelist_url = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist",
            current_app=self.admin_site.name,
        )
        query = request.GET.urlencode()
        redirect_url = f"{changelist_url}?{query}" if query else changelist_url
        try:
            queryset = self.get_changelist_instance(request).get_queryset(request)
        except IncorrectLookupParameters:
            self.message_user(
                request, "The filters are not valid; nothing replayed.", messages.ERROR
            )
            return HttpResponseRedirect(changelist_url)
        result = dead_letters_replay(queryset=queryset)
        self.message_user(request, replay_message(result), messages.SUCCESS)
        return HttpResponseRedirect(redirect_url)

    def has_replay_permission(self, request):
        """Replaying needs the permission to change deliveries."""
        return request.user.has_perm("deliveries.change_delivery")

    def has_view_permission(self, request, obj=None):
        """Whoever may see deliveries may see the dead letters among them."""
        return (
            super().has_view_permission(request, obj)
            or request.user.has_perm("deliveries.view_delivery")
            or request.user.has_perm("deliveries.change_delivery")
        )

    def has_add_permission(self, request):
        """Dead letters come from failed deliveries only."""
        return False

    def has_change_permission(self, request, obj=None):
        """Dead letters are never edited; they are replayed by the actions."""
        return False

    def has_delete_permission(self, request, obj=None):
        """Dead letters are replayed or left to retention, never deleted here."""
        return False
