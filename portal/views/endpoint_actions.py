"""What the consumer does with one endpoint: its secret, replays of dead letters."""

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST, require_safe

from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.replay import dead_letters_replay
from portal.access import portal_page
from portal.views.pages import endpoint_or_404, portal_render
from subscriptions.services import endpoint_rotate_secret


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
        messages.error(request, "Resume the endpoint first: it is paused.")
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
