"""What the consumer does with one endpoint: its secret, test events, replays of
dead letters and recovery of a time window."""

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import (
    require_http_methods,
    require_POST,
    require_safe,
)

from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.recovery import endpoint_recover
from deliveries.services.replay import dead_letters_replay
from deliveries.services.test_events import endpoint_send_test
from portal.access import for_changes, portal_page
from portal.forms import RecoverForm, TestEventForm
from portal.views.pages import endpoint_or_404, portal_render
from subscriptions.services import EndpointInactive, endpoint_rotate_secret
from tenants.throttling import RateLimited, tenant_check_rate

INACTIVE_MESSAGE = "Resume the endpoint first: it is paused."


@require_safe
@portal_page
def endpoint_secret(request: HttpRequest, endpoint_id) -> HttpResponse:
    """The endpoint's signing secret, shown when asked for (never on other pages)."""
    endpoint = endpoint_or_404(request, endpoint_id)
    secrets = endpoint.active_secrets()
    context = {
        "endpoint": endpoint,
        "secret": secrets[0] if secrets else "",
        "previous_signing": len(secrets) > 1,
        "grace_hours": settings.WEBHOOK_SECRET_ROTATION_GRACE / 3600,
    }
    return portal_render(request, "portal/endpoint_secret.html", context)


@require_POST
@portal_page
def endpoint_rotate(request: HttpRequest, endpoint_id) -> HttpResponse:
    """A new signing secret; the previous one keeps signing for the grace period."""
    endpoint = endpoint_or_404(request, endpoint_id)
    endpoint_rotate_secret(endpoint=endpoint)
    hours = settings.WEBHOOK_SECRET_ROTATION_GRACE / 3600
    messages.success(
        request,
        f"Secret rotated. The previous secret keeps signing for {hours:g} hours: "
        "deliveries carry both signatures until then.",
    )
    return redirect("portal:endpoint-secret", endpoint_id=endpoint.pk)


@require_POST
@portal_page
def endpoint_replay(request: HttpRequest, endpoint_id) -> HttpResponse:
    """Queue the endpoint's dead letters again (bounded, oldest first)."""
    endpoint = endpoint_or_404(request, endpoint_id)
    if not endpoint.is_active:
        messages.error(request, INACTIVE_MESSAGE)
        return redirect("portal:endpoint", endpoint_id=endpoint.pk)
    dead = Delivery.objects.filter(endpoint=endpoint, status=DeliveryStatus.DEAD_LETTER)
    result = dead_letters_replay(queryset=dead)
    if result.remaining:
        messages.success(
            request,
            f"{result.replayed} dead letters queued again; {result.remaining} "
            "remain: replay again for the rest.",
        )
    else:
        messages.success(request, f"{result.replayed} dead letters queued again.")
    return redirect("portal:endpoint", endpoint_id=endpoint.pk)


@require_POST
@portal_page
def endpoint_test(request: HttpRequest, endpoint_id) -> HttpResponse:
    """Send a test event to this endpoint alone (the tenant's event rate applies)."""
    endpoint = endpoint_or_404(request, endpoint_id)
    form = TestEventForm(request.POST)
    if not form.is_valid():
        for field_errors in form.errors.values():
            for message in field_errors:
                messages.error(request, f"Test event not sent: {message}")
        return redirect("portal:endpoint", endpoint_id=endpoint.pk)
    try:
        tenant_check_rate(tenant=request.portal.tenant)
        result = endpoint_send_test(endpoint=endpoint, **form.test_fields)
    except EndpointInactive:
        messages.error(request, INACTIVE_MESSAGE)
    except RateLimited as exc:
        messages.error(request, f"Test event not sent: {exc.detail}")
    else:
        messages.success(
            request,
            f"Test event {result.event.event_type} sent: it shows in the "
            "deliveries below.",
        )
    return redirect("portal:endpoint", endpoint_id=endpoint.pk)


@require_http_methods(["GET", "HEAD", "POST"])
@portal_page
@for_changes
def endpoint_recover_window(request: HttpRequest, endpoint_id) -> HttpResponse:
    """Queue again what the endpoint missed of the events of a time window."""
    endpoint = endpoint_or_404(request, endpoint_id)
    form = RecoverForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            result = endpoint_recover(endpoint=endpoint, **form.recover_fields)
        except EndpointInactive:
            form.add_error(None, INACTIVE_MESSAGE)
        else:
            text = (
                f"Recovery: {result.replayed} dead letters queued again, "
                f"{result.created} missed events sent."
            )
            if result.remaining:
                text += f" {result.remaining} remain: recover again for the rest."
            messages.success(request, text)
            return redirect("portal:endpoint", endpoint_id=endpoint.pk)
    return portal_render(
        request, "portal/endpoint_recover.html", {"endpoint": endpoint, "form": form}
    )
