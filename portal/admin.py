"""Portal sessions in Django admin: read-only (no token), and ending one early."""

from django.contrib import admin, messages
from django.utils import timezone
from django.utils.translation import ngettext

from portal.models import PortalSession
from portal.services import portal_sessions_end
from tenants.admin import UUIDSearchMixin


@admin.register(PortalSession)
class PortalSessionAdmin(UUIDSearchMixin, admin.ModelAdmin):
    """Links issued into the consumer portal; their tokens are never stored."""

    list_display = (
        "consumer",
        "tenant",
        "read_only",
        "created_at",
        "used_at",
        "expires_at",
        "is_live",
    )
    list_filter = ("read_only",)
    list_select_related = ("tenant",)
    search_fields = ("consumer",)
    uuid_search_fields = ("pk", "tenant__pk")
    fields = (
        "id",
        "tenant",
        "consumer",
        "read_only",
        "created_at",
        "used_at",
        "expires_at",
    )
    readonly_fields = fields
    actions = ("end_sessions",)

    @admin.display(boolean=True, description="live")
    def is_live(self, session: PortalSession) -> bool:
        """Whether its link or pages still open anything."""
        return session.expires_at > timezone.now()

    def has_add_permission(self, request):
        """Sessions come from the API only (the link is shown to its caller once)."""
        return False

    @admin.action(description="End selected sessions now", permissions=("change",))
    def end_sessions(self, request, queryset):
        """Expire the selected sessions: their links and pages answer 403."""
        ended = portal_sessions_end(sessions=queryset)
        self.message_user(
            request,
            ngettext("Ended %d session.", "Ended %d sessions.", ended) % ended,
            messages.SUCCESS,
        )
