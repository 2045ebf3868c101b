"""Endpoint health: disabling (with its pending deliveries), failure runs, replays."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deliveries.flow import gate, refusals
from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.platform_events import platform_endpoint_disabled
from deliveries.services.replay import ReplayResult, dead_letters_replay
from deliveries.services.scheduling import dead_letter_fields
from subscriptions.models import Endpoint
from subscriptions.services import endpoint_disable, endpoint_update
from webhooks_project import metrics

logger = logging.getLogger(__name__)

# Dead letters whose reason starts with this were never refused by the receiver:
# the endpoint was off. "Replay what it missed" replays exactly those.
DISABLED_REASON_PREFIX = "endpoint disabled"


def disabled_reason(reason: str) -> str:
    """The dead-letter reason of deliveries of an endpoint disabled for `reason`."""
    return f"{DISABLED_REASON_PREFIX}: {reason}"[:255]


@transaction.atomic
def endpoint_deactivate(*, endpoint_id, reason: str) -> int:
    """The platform disables an endpoint: dead-letter its waiting deliveries and
    publish `platform.endpoint.disabled`; return how many were dead-lettered.

    Deliveries in flight finish their attempt; the ones after it see the endpoint
    disabled and are dead-lettered by the task. The event is published once, by
    the call that disabled it, in the same transaction. A tenant disabling its
    own endpoint (endpoint_change) publishes none: it knows.
    """
    if endpoint_disable(endpoint_id=endpoint_id, reason=reason):
        platform_endpoint_disabled(endpoint_id=endpoint_id)
    return deliveries_dead_letter_for_endpoint(endpoint_id=endpoint_id, reason=reason)


def deliveries_dead_letter_for_endpoint(*, endpoint_id, reason: str) -> int:
    """Dead-letter an endpoint's pending and failed deliveries."""
    now = timezone.now()
    count = Delivery.objects.filter(
        endpoint_id=endpoint_id,
        status__in=(DeliveryStatus.PENDING, DeliveryStatus.FAILED),
    ).update(
        **dead_letter_fields(reason=disabled_reason(reason), now=now), updated_at=now
    )
    if count:
        metrics.DELIVERIES_DEAD_LETTERED.inc(count)
        logger.warning(
            "endpoint %s disabled (%s): %d deliveries dead-lettered",
            endpoint_id,
            reason,
            count,
        )
    return count


def endpoint_record_success(*, endpoint: Endpoint) -> None:
    """End the endpoint's run of failures (one write only when there was one)."""
    if endpoint.failing_since is not None:
        Endpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
        endpoint.failing_since = None


def endpoint_record_failure(*, endpoint: Endpoint) -> bool:
    """Note a failure; disable the endpoint once it has failed for too long.

    Returns True when this failure disabled the endpoint.
    """
    now = timezone.now()
    if endpoint.failing_since is None:
        Endpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(
            failing_since=now
        )
        endpoint.failing_since = now
        return False
    limit = timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER)
    if now - endpoint.failing_since < limit:
        return False
    days = settings.WEBHOOK_DISABLE_AFTER / 86400
    endpoint_deactivate(
        endpoint_id=endpoint.pk,
        reason=f"no successful delivery for {days:g} days",
    )
    return True


def endpoint_reactivate(*, endpoint: Endpoint) -> None:
    """Clear an endpoint's failure run and flow-control state when re-enabled."""
    Endpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
    gate.reset(endpoint.pk)
    refusals.note_recovered([endpoint.pk])  # others within REFUSALS_LIFETIME


@transaction.atomic
def endpoint_change(*, endpoint: Endpoint, changes: dict) -> Endpoint:
    """Update an endpoint; disabling dead-letters what waits, enabling resets it."""
    was_active = endpoint.is_active
    endpoint = endpoint_update(endpoint=endpoint, **changes)
    if was_active and not endpoint.is_active:
        deliveries_dead_letter_for_endpoint(
            endpoint_id=endpoint.pk, reason=endpoint.disabled_reason
        )
    elif endpoint.is_active and not was_active:
        endpoint_reactivate(endpoint=endpoint)
    return endpoint


def endpoint_replay_missed(
    *, endpoint: Endpoint, limit: int | None = None
) -> ReplayResult:
    """Replay the dead letters an endpoint got while it was disabled (bounded:
    `limit`, or WEBHOOK_REPLAY_MAX)."""
    missed = Delivery.objects.filter(
        endpoint=endpoint,
        status=DeliveryStatus.DEAD_LETTER,
        dead_letter_reason__startswith=DISABLED_REASON_PREFIX,
    )
    return dead_letters_replay(queryset=missed, limit=limit)
