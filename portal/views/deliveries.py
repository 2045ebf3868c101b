"""One delivery of an endpoint: its attempts, and a retry."""

import json

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST, require_safe

from deliveries.api.serializers import AttemptSerializer
from deliveries.models import Delivery
from deliveries.services.scheduling import DeliveryExpired, delivery_requeue
from portal.access import portal_page
from portal.selectors import portal_delivery_attempts, portal_delivery_get
from portal.views.pages import endpoint_or_404, portal_render

# The event's payload is shown up to this many characters.
PAYLOAD_SHOWN = 16 * 1024


def _delivery_or_404(request: HttpRequest, endpoint_id, delivery_id):
    endpoint = endpoint_or_404(request, endpoint_id)
    delivery = portal_delivery_get(endpoint=endpoint, delivery_id=delivery_id)
    if delivery is None:
        raise Http404
    return endpoint, delivery


@require_safe
@portal_page
def delivery_detail(request: HttpRequest, endpoint_id, delivery_id) -> HttpResponse:
    """A delivery with every attempt, as the attempts API shows them."""
    endpoint, delivery = _delivery_or_404(request, endpoint_id, delivery_id)
    rows = list(portal_delivery_attempts(delivery=delivery))
    # The API's representation, plus the start time as a datetime to format.
    attempts = [
        {**data, "started": row.started_at}
        for row, data in zip(rows, AttemptSerializer(rows, many=True).data, strict=True)
    ]
    payload = json.dumps(delivery.event.payload, indent=2, sort_keys=True)
    context = {
        "endpoint": endpoint,
        "delivery": delivery,
        "attempts": attempts,
        "payload": payload[:PAYLOAD_SHOWN],
        "payload_truncated": len(payload) > PAYLOAD_SHOWN,
    }
    return portal_render(request, "portal/delivery_detail.html", context)


@require_POST
@portal_page
def delivery_retry(request: HttpRequest, endpoint_id, delivery_id) -> HttpResponse:
    """Queue the delivery again now, whatever its status (an expired one: forced)."""
    endpoint, delivery = _delivery_or_404(request, endpoint_id, delivery_id)
    if not endpoint.is_active:
        # The task would only dead-letter it again.
        messages.error(request, "Resume the endpoint first: it is paused.")
    else:
        force = request.POST.get("force") == "1"
        try:
            delivery_requeue(delivery=delivery, force=force)
        except Delivery.DoesNotExist:  # purged (retention) while this waited for it
            raise Http404 from None
        except DeliveryExpired:
            messages.error(request, "This delivery has expired: use Retry anyway.")
        else:
            messages.success(request, "Delivery queued again: it is attempted now.")
    return redirect("portal:delivery", endpoint_id=endpoint.pk, delivery_id=delivery.pk)
