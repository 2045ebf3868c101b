"""Admin for the dead-letter queue: triage at a glance, replays after a confirmation."""

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.timesince import timesince
from django.views.decorators.http import require_http_methods

from deliveries.admin.deliveries import (
    DeliveryAdminMixin,
)
from deliveries.admin.display import replay_message
from deliveries.admin.filters import (
    ENDPOINT_PARAMETER,
    TENANT_PARAMETER,
    AgeListFilter,
    EndpointListFilter,
    ReasonListFilter,
    TenantListFilter,
)
from deliveries.models import DeadLetter, DeliveryStatus
from deliveries.services.replay import dead_letters_replay
from tenants.admin import UUIDSearchMixin
from webhooks_project.admin_lists import LargeTableAdminMixin

# Query parameters of the changelist that do not narrow what matches.
NON_FILTER_PARAMS = ("p", "e")
CONFIRMATION_TEMPLATE = "admin/deliveries/deadletter/replay_confirmation.html"


@admin.register(DeadLetter)
class DeadLetterAdmin(
    LargeTableAdminMixin, DeliveryAdminMixin, UUIDSearchMixin, admin.ModelAdmin
):
    """Dead-lettered deliveries, replayable by selection or by the current filter."""

    list_display = (
        "short_id",
        "age",
        "event_type",
        "endpoint_link",
        "tenant",
        "reason",
        "attempts",
        "last_status",
    )
    list_display_links = ("short_id",)
    list_filter = (
        TenantListFilter,
        EndpointListFilter,
        ReasonListFilter,
        AgeListFilter,
    )
    list_select_related = ("event", "endpoint", "tenant")
    search_fields = ()
    uuid_search_fields = ("pk", "event_id", "endpoint_id")
    search_help_text = "A full delivery, event or endpoint id."
    # Sorted by the date the dead-letter index orders only. The list is always
    # filtered (status), so it is counted exactly, on that partial index.
    sortable_by = ("age",)
    ordering = ("-dead_lettered_at",)
    actions = ("replay_selected",)

    def get_queryset(self, request):
        """Dead-lettered deliveries only, without their event's payload."""
        return (
            super()
            .get_queryset(request)
            .filter(status=DeliveryStatus.DEAD_LETTER)
            .defer("event__payload")
        )

    @admin.display(description="delivery")
    def short_id(self, obj: DeadLetter):
        """The random end of the delivery's id; the whole id on hover."""
        return format_html('<span title="{}">…{}</span>', obj.pk, str(obj.pk)[-12:])

    @admin.display(description="reason")
    def reason(self, obj: DeadLetter) -> str:
        """Why it was dead-lettered."""
        return obj.dead_letter_reason

    @admin.display(description="attempts")
    def attempts(self, obj: DeadLetter) -> int:
        """How many attempts it had, over every round."""
        return obj.attempt_count

    @admin.display(description="last status")
    def last_status(self, obj: DeadLetter):
        """The HTTP status of its last attempt, if one answered."""
        return obj.last_status_code

    @admin.display(description="endpoint")
    def endpoint_link(self, obj: DeadLetter):
        """The endpoint's URL, linking to the list of its dead letters."""
        query = urlencode(
            {TENANT_PARAMETER: obj.tenant_id, ENDPOINT_PARAMETER: obj.endpoint_id}
        )
        return format_html(
            '<a href="?{}" title="Only this endpoint\'s dead letters">{}</a>',
            query,
            obj.endpoint.url,
        )

    @admin.display(description="age", ordering="-dead_lettered_at")
    def age(self, obj: DeadLetter):
        """How long ago it was dead-lettered, with the exact time on hover."""
        if obj.dead_lettered_at is None:
            return "-"
        return format_html(
            '<time datetime="{}" title="{}">{}</time>',
            obj.dead_lettered_at.isoformat(),
            obj.dead_lettered_at.strftime("%Y-%m-%d %H:%M:%S %Z"),
            timesince(obj.dead_lettered_at),
        )

    def get_urls(self):
        """Add the "replay all matching" URL before the object URLs."""
        name = f"{self.opts.app_label}_{self.opts.model_name}_replay_matching"
        view = self.admin_site.admin_view(
            require_http_methods(["GET", "HEAD", "POST"])(self.replay_matching_view)
        )
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
        """Confirm how many will be replayed, then replay the selected dead letters."""
        selected = queryset.count()
        if request.POST.get("post") != "yes":
            hidden = [
                ("action", "replay_selected"),
                ("select_across", request.POST.get("select_across", "0")),
                ("index", "0"),
                ("post", "yes"),
                *(
                    (helpers.ACTION_CHECKBOX_NAME, pk)
                    for pk in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
                ),
            ]
            across = request.POST.get("select_across") == "1"
            return self.replay_confirmation(
                request,
                count=selected,
                form_url=request.get_full_path(),
                hidden=hidden,
                scope=self.scope_of(request) if across else [],
            )
        self.replay(request, queryset, expected=selected)
        return None

    def replay_matching_view(self, request):
        """GET: how many dead letters the filters and search match; POST: replay."""
        if not self.has_replay_permission(request):
            raise PermissionDenied
        request.GET = request.GET.copy()
        for name in NON_FILTER_PARAMS:
            request.GET.pop(name, None)
        query = request.GET.urlencode()
        try:
            # Counts the matching rows exactly: the list is always filtered.
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            self.message_user(
                request, "The filters are not valid; nothing replayed.", messages.ERROR
            )
            return HttpResponseRedirect(self.changelist_url())
        if request.method != "POST":
            return self.replay_confirmation(
                request,
                count=changelist.result_count,
                form_url=f"{request.path}?{query}" if query else request.path,
                hidden=[],
                scope=self.scope_of(request, changelist),
            )
        self.replay(request, changelist.queryset)
        return HttpResponseRedirect(
            f"{self.changelist_url()}?{query}" if query else self.changelist_url()
        )

    def replay(self, request, queryset, *, expected: int | None = None) -> None:
        """Replay the dead letters of `queryset` and report how many.

        The one reader of `dead_letters_replay`'s result in the admin.
        """
        result = dead_letters_replay(queryset=queryset)
        message = replay_message(result)
        handled = result.replayed + result.remaining + result.skipped
        if expected is not None and handled < expected:
            message += f" ({expected - handled} were no longer dead letters)"
        self.message_user(request, message, messages.SUCCESS)

    def replay_confirmation(self, request, *, count, form_url, hidden, scope):
        """The page that states how many deliveries a replay will queue again."""
        query = request.GET.copy()
        for name in NON_FILTER_PARAMS:
            query.pop(name, None)
        cancel_url = self.changelist_url()
        if query:
            cancel_url += f"?{query.urlencode()}"
        context = {
            **self.admin_site.each_context(request),
            "title": "Replay dead letters?",
            "subtitle": None,
            "opts": self.opts,
            "count": count,
            "replay_max": settings.WEBHOOK_REPLAY_MAX,
            "scope": scope,
            "form_url": form_url,
            "hidden": hidden,
            "cancel_url": cancel_url,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, CONFIRMATION_TEMPLATE, context)

    def scope_of(self, request, changelist=None) -> list[str]:
        """The chosen filters and search of the list, as "title: choice" lines."""
        changelist = changelist or self.get_changelist_instance(request)
        lines = []
        for spec in changelist.filter_specs:
            for choice in spec.choices(changelist):
                if choice["selected"] and spec.value() is not None:
                    lines.append(f"{spec.title}: {choice['display']}")
        if changelist.query:
            lines.append(f"search: {changelist.query}")
        return lines

    def changelist_url(self) -> str:
        """The dead-letter list's URL, without a query."""
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist",
            current_app=self.admin_site.name,
        )

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
