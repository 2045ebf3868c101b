"""The dashboard page and the JSON figures it polls, for staff who see deliveries."""

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from deliveries.dashboard.selectors import (
    FEED_LENGTH,
    HEALTH_WINDOW,
    dashboard_snapshot,
)
from webhooks_project.replica import read_lag_tolerant

# How often the page asks for new figures, in milliseconds.
POLL_INTERVAL_MS = 2000
# Either permission lets a staff member see deliveries in the admin.
VIEW_PERMISSIONS = ("deliveries.view_delivery", "deliveries.change_delivery")


def can_view_dashboard(user) -> bool:
    """Active staff who may see deliveries (every tenant's) in the admin."""
    return (
        user.is_active
        and user.is_staff
        and any(user.has_perm(permission) for permission in VIEW_PERMISSIONS)
    )


@require_safe
@never_cache
@staff_member_required
def dashboard_page(request: HttpRequest) -> HttpResponse:
    """The live page; anonymous and non-staff users go to the admin login."""
    if not can_view_dashboard(request.user):
        raise PermissionDenied
    context = {
        "data_url": reverse("dashboard-data"),
        "poll_interval_ms": POLL_INTERVAL_MS,
        "feed_length": FEED_LENGTH,
        "health_minutes": int(HEALTH_WINDOW.total_seconds() // 60),
        "dead_letters_url": reverse("admin:deliveries_deadletter_changelist"),
        "admin_url": reverse("admin:index"),
    }
    return render(request, "deliveries/dashboard.html", context)


@require_safe
@never_cache
def dashboard_data(request: HttpRequest) -> JsonResponse:
    """The dashboard's figures as JSON; 403 unless the user may see the page.

    Read from the replica if there is one: figures polled every few seconds
    tolerate a second of lag, and they are the heaviest reads of the admin.
    """
    if not can_view_dashboard(request.user):
        return JsonResponse(
            {"detail": "Staff access to deliveries is required."}, status=403
        )
    return JsonResponse(read_lag_tolerant(lambda db: dashboard_snapshot(using=db)))
