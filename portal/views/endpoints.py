"""The consumer's endpoints: list, create, overview, edit, pause, delete."""

from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import (
    require_http_methods,
    require_POST,
    require_safe,
)

from deliveries.models import DeliveryStatus
from deliveries.services.endpoint_health import endpoint_change
from deliveries.stats import endpoint_stats
from portal.access import for_changes, portal_page
from portal.charts import hourly_chart
from portal.forms import EndpointForm, TestEventForm
from portal.selectors import (
    COUNT_CAP,
    portal_dead_letter_count,
    portal_delivery_list,
    portal_endpoint_list,
    portal_event_type_suggestions,
)
from portal.views.pages import endpoint_or_404, page_of, portal_render
from subscriptions.services import endpoint_create, endpoint_delete

# The window of an endpoint's figures and chart.
STATS_WINDOW = timedelta(hours=24)
# The status filters above an endpoint's deliveries, in this order.
STATUS_FILTERS = [
    (DeliveryStatus.SUCCEEDED, "Succeeded"),
    (DeliveryStatus.FAILED, "Failed"),
    (DeliveryStatus.PENDING, "Pending"),
    (DeliveryStatus.IN_PROGRESS, "In progress"),
    (DeliveryStatus.DEAD_LETTER, "Dead letter"),
    (DeliveryStatus.EXPIRED, "Expired"),
]


@require_safe
@portal_page
def endpoint_list(request: HttpRequest) -> HttpResponse:
    """The consumer's endpoints."""
    endpoints = portal_endpoint_list(portal=request.portal)
    return portal_render(request, "portal/endpoint_list.html", {"endpoints": endpoints})


@require_http_methods(["GET", "HEAD", "POST"])
@portal_page
@for_changes
def endpoint_new(request: HttpRequest) -> HttpResponse:
    """Add an endpoint for the consumer."""
    suggestions = portal_event_type_suggestions(portal=request.portal)
    form = EndpointForm(request.POST or None, suggestions=suggestions)
    if request.method == "POST" and form.is_valid():
        try:
            endpoint = endpoint_create(
                tenant=request.portal.tenant,
                consumer=request.portal.consumer,
                **form.endpoint_fields,
            )
        except ValidationError as exc:
            _add_service_errors(form, exc)
        else:
            messages.success(
                request,
                "Endpoint added. Reveal its signing secret below to verify what "
                "it receives.",
            )
            return redirect("portal:endpoint", endpoint_id=endpoint.pk)
    return portal_render(
        request, "portal/endpoint_form.html", {"form": form, "endpoint": None}
    )


@require_safe
@portal_page
def endpoint_detail(request: HttpRequest, endpoint_id) -> HttpResponse:
    """An endpoint: its settings, its last 24 hours and its recent deliveries."""
    endpoint = endpoint_or_404(request, endpoint_id)
    status = request.GET.get("status") or ""
    if status not in DeliveryStatus.values:
        status = ""
    page = page_of(portal_delivery_list(endpoint=endpoint, status=status), request)
    context = {
        "endpoint": endpoint,
        "page": page,
        "status": status,
        "status_filters": STATUS_FILTERS,
        "dead_letters": portal_dead_letter_count(endpoint=endpoint),
        "count_cap": COUNT_CAP,
        "test_form": TestEventForm(),
        "test_url": reverse("portal:endpoint-test", args=[endpoint.pk]),
        "recover_url": reverse("portal:endpoint-recover", args=[endpoint.pk]),
        **_last_day(endpoint),
    }
    return portal_render(request, "portal/endpoint_detail.html", context)


def _last_day(endpoint) -> dict:
    """The endpoint's figures and chart of the last 24 hours."""
    until = timezone.now()
    since = until - STATS_WINDOW
    stats = endpoint_stats(endpoint=endpoint, since=since, until=until)
    return {
        "stats": stats,
        "deliveries_total": sum(stats["deliveries"].values()),
        "circuit_state": stats["circuit"].get("state"),
        "chart": hourly_chart(stats["series"], since=since, until=until),
    }


@require_http_methods(["GET", "HEAD", "POST"])
@portal_page
@for_changes
def endpoint_edit(request: HttpRequest, endpoint_id) -> HttpResponse:
    """Change an endpoint's URL, description or event types."""
    endpoint = endpoint_or_404(request, endpoint_id)
    suggestions = portal_event_type_suggestions(portal=request.portal)
    form = EndpointForm(
        request.POST or None,
        initial=EndpointForm.initial_for(endpoint),
        suggestions=suggestions,
        chosen=endpoint.event_types,
    )
    if request.method == "POST" and form.is_valid():
        try:
            endpoint_change(endpoint=endpoint, changes=form.endpoint_fields)
        except ValidationError as exc:
            _add_service_errors(form, exc)
        else:
            messages.success(request, "Endpoint saved.")
            return redirect("portal:endpoint", endpoint_id=endpoint.pk)
    return portal_render(
        request, "portal/endpoint_form.html", {"form": form, "endpoint": endpoint}
    )


@require_POST
@portal_page
def endpoint_pause(request: HttpRequest, endpoint_id) -> HttpResponse:
    """Pause an endpoint: nothing is delivered to it; what waits is dead-lettered."""
    endpoint = endpoint_or_404(request, endpoint_id)
    if endpoint.is_active:
        endpoint_change(endpoint=endpoint, changes={"is_active": False})
        messages.success(
            request,
            "Endpoint paused. Deliveries that were waiting went to the dead "
            "letters: recover them when you resume it.",
        )
    return redirect("portal:endpoint", endpoint_id=endpoint.pk)


@require_POST
@portal_page
def endpoint_resume(request: HttpRequest, endpoint_id) -> HttpResponse:
    """Resume a paused (or disabled) endpoint."""
    endpoint = endpoint_or_404(request, endpoint_id)
    if not endpoint.is_active:
        endpoint_change(endpoint=endpoint, changes={"is_active": True})
        messages.success(request, "Endpoint resumed.")
    return redirect("portal:endpoint", endpoint_id=endpoint.pk)


@require_http_methods(["GET", "HEAD", "POST"])
@portal_page
@for_changes
def endpoint_remove(request: HttpRequest, endpoint_id) -> HttpResponse:
    """Delete an endpoint, once confirmed."""
    endpoint = endpoint_or_404(request, endpoint_id)
    if request.method == "POST":
        endpoint_delete(endpoint=endpoint)
        messages.success(request, f"Endpoint {endpoint.url} deleted.")
        return redirect("portal:endpoints")
    return portal_render(request, "portal/endpoint_delete.html", {"endpoint": endpoint})


def _add_service_errors(form: EndpointForm, exc: ValidationError) -> None:
    """A service's refusal (a tenant limit) beside the field it is about."""
    if hasattr(exc, "error_dict"):
        for field, field_messages in exc.message_dict.items():
            for message in field_messages:
                form.add_error(field if field in form.fields else None, message)
    else:
        for message in exc.messages:
            form.add_error(None, message)
