"""Badges and small formatting for the portal's templates."""

import json
from datetime import timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince

from deliveries.models import AttemptOutcome, DeliveryStatus

register = template.Library()

# Badge colour of each delivery status.
STATUS_TONES = {
    DeliveryStatus.SUCCEEDED: "ok",
    DeliveryStatus.FAILED: "warn",
    DeliveryStatus.PENDING: "info",
    DeliveryStatus.IN_PROGRESS: "info",
    DeliveryStatus.DEAD_LETTER: "bad",
}
OUTCOME_TONES = {AttemptOutcome.SUCCESS: "ok"}
# The reason endpoint_update gives an endpoint switched off by its owner.
PAUSED_REASON = "disabled by the tenant"


@register.simple_tag
def status_badge(status: str) -> str:
    """A delivery's status as a coloured badge."""
    label = DeliveryStatus(status).label if status in DeliveryStatus.values else status
    return format_html(
        '<span class="badge badge-{}">{}</span>',
        STATUS_TONES.get(status, "muted"),
        label,
    )


@register.simple_tag
def outcome_badge(outcome: str) -> str:
    """An attempt's outcome as a coloured badge."""
    label = (
        AttemptOutcome(outcome).label if outcome in AttemptOutcome.values else outcome
    )
    return format_html(
        '<span class="badge badge-{}">{}</span>',
        OUTCOME_TONES.get(outcome, "bad"),
        label,
    )


@register.simple_tag
def endpoint_badge(endpoint) -> str:
    """Active, paused (by its owner) or disabled (by the platform, with why)."""
    if endpoint.is_active:
        return mark_safe('<span class="badge badge-ok">Active</span>')
    if endpoint.disabled_reason == PAUSED_REASON:
        return mark_safe('<span class="badge badge-muted">Paused</span>')
    return format_html(
        '<span class="badge badge-bad" title="{}">Disabled</span>',
        endpoint.disabled_reason,
    )


@register.filter
def pretty_json(value) -> str:
    """A JSON value, indented for reading."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@register.filter
def percent(value) -> str:
    """A share (0-1) as a percentage with one decimal, or an em dash for none."""
    if value is None:
        return "—"
    return f"{value * 100:.1f} %"


@register.filter
def ago(moment) -> str:
    """How long ago `moment` was, or "just now" within the minute."""
    if moment is None:
        return "—"
    if timezone.now() - moment < timedelta(minutes=1):
        return "just now"
    return f"{timesince(moment)} ago"
