"""One delivery attempt: claim the row, sign, POST, record, decide what is next."""

import functools
import logging

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from deliveries import flowcontrol, retry, transport
from deliveries.envelope import envelope_body, signed_headers
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from deliveries.services.claim import delivery_claim
from deliveries.services.endpoint_health import (
    disabled_reason,
    endpoint_deactivate,
    endpoint_record_failure,
    endpoint_record_success,
)
from deliveries.services.scheduling import (
    SKIPPED,
    AttemptDecision,
    delivery_dead_letter,
    delivery_postpone,
    mark_dead,
    schedule_retry,
)
from webhooks_project import metrics

logger = logging.getLogger(__name__)

# Request headers whose values are never stored on attempt records.
REDACTED_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"}
)
GONE_REASON = "receiver answered 410 Gone"


def delivery_attempt(*, delivery_id) -> AttemptDecision:
    """Run the next attempt of a delivery if it is due and nobody else holds it.

    Safe to call again for the same id: a delivery already final, held by a live
    worker, or not yet due is left alone.
    """
    delivery = delivery_claim(delivery_id=delivery_id)
    if delivery is None:
        return SKIPPED
    endpoint = delivery.endpoint
    if not endpoint.is_active:
        reason = disabled_reason(endpoint.disabled_reason or "inactive")
        delivery_dead_letter(delivery=delivery, reason=reason)
        return AttemptDecision(attempted=False, status=DeliveryStatus.DEAD_LETTER)
    gate = flowcontrol.enter(endpoint_id=endpoint.pk, rate_limit=endpoint.rate_limit)
    if not gate.allowed:
        return delivery_postpone(delivery=delivery, wait=gate.wait, reason=gate.reason)
    result = None
    try:
        body = envelope_body(delivery.event)
        headers = signed_headers(
            event_id=str(delivery.event_id),
            body=body,
            secrets=endpoint.active_secrets(),
            extra=endpoint.headers,
        )
        started_at = timezone.now()
        result = transport.post(url=endpoint.url, body=body, headers=headers)
        return _record(
            delivery=delivery, result=result, headers=headers, started_at=started_at
        )
    finally:
        flowcontrol.leave(
            endpoint_id=endpoint.pk,
            token=gate.token,
            succeeded=result is not None and result.succeeded,
            duration_ms=result.duration_ms if result is not None else 0,
            pause=_receiver_pause(result),
            probe=gate.probe,
        )


def _record(
    *,
    delivery: Delivery,
    result: transport.TransportResult,
    headers: dict[str, str],
    started_at,
) -> AttemptDecision:
    """Store the attempt and move the delivery to its next state, atomically."""
    now = timezone.now()
    retry_in = None
    attempt = DeliveryAttempt(
        delivery=delivery,
        number=0,
        started_at=started_at,
        duration_ms=result.duration_ms,
        outcome=result.outcome,
        request_headers=_redacted(headers),
        response_status=result.status,
        response_headers=result.headers,
        response_body=_stored_body(result.body),
        error=result.error,
    )
    if result.succeeded and delivery.endpoint.failing_since is None:
        # The common case, in one statement: nothing else to decide or write.
        locked, number = delivery, _record_success(attempt=attempt, now=now)
        locked.attempt_count = number
        locked.last_status_code = result.status
        locked.last_error = result.error
        locked.status = DeliveryStatus.SUCCEEDED
        locked.succeeded_at = now
        locked.next_attempt_at = locked.lease_expires_at = None
        _observe(locked, result, accepted_at=delivery.event.created_at)
        _log(locked, number, result)
        return AttemptDecision(attempted=True, status=locked.status)
    with transaction.atomic():
        locked = Delivery.objects.select_for_update().get(pk=delivery.pk)
        number = locked.attempt_count + 1
        attempt.delivery, attempt.number = locked, number
        attempt.save(force_insert=True)
        locked.attempt_count = number
        locked.last_status_code = result.status
        locked.last_error = result.error
        if result.succeeded:
            locked.status = DeliveryStatus.SUCCEEDED
            locked.succeeded_at = now
            locked.next_attempt_at = None
            locked.lease_expires_at = None
            endpoint_record_success(endpoint=delivery.endpoint)
        elif result.status == retry.GONE:
            endpoint_deactivate(endpoint_id=locked.endpoint_id, reason=GONE_REASON)
            mark_dead(locked, reason=disabled_reason(GONE_REASON), now=now)
        elif endpoint_record_failure(endpoint=delivery.endpoint):
            reason = disabled_reason(delivery.endpoint.disabled_reason or "failing")
            mark_dead(locked, reason=reason, now=now)
        else:
            pause = _receiver_pause(result)
            retry_in = schedule_retry(
                locked, retry_after=pause, spend=pause is None, now=now
            )
        locked.save()
    _observe(locked, result, accepted_at=delivery.event.created_at)
    _log(locked, number, result)
    return AttemptDecision(attempted=True, status=locked.status, retry_in=retry_in)


def _log(locked: Delivery, number: int, result: transport.TransportResult) -> None:
    logger.info(
        "delivery %s attempt %d to endpoint %s: %s%s -> %s",
        locked.pk,
        number,
        locked.endpoint_id,
        result.outcome,
        f" {result.status}" if result.status else "",
        locked.status,
        extra={
            "tenant_id": locked.tenant_id,
            "event_id": locked.event_id,
            "delivery_id": locked.pk,
            "endpoint_id": locked.endpoint_id,
            "attempt": number,
            "outcome": result.outcome,
            "status_code": result.status,
            "duration_ms": result.duration_ms,
            "delivery_status": locked.status,
        },
    )


def _record_success(*, attempt: DeliveryAttempt, now) -> int:
    """Count the attempt, store it and mark the delivery succeeded; its number.

    One statement (an UPDATE ... RETURNING feeding the INSERT): atomic on its
    own, and the row lock of the UPDATE serialises it like select_for_update.
    """
    values = [
        field.get_db_prep_save(getattr(attempt, field.attname), connection)
        for field in _attempt_fields()
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            _success_sql(),
            [
                DeliveryStatus.SUCCEEDED,
                now,
                attempt.response_status,
                attempt.error,
                now,
                attempt.delivery_id,
                *values,
            ],
        )
        return cursor.fetchone()[0]


@functools.cache
def _attempt_fields() -> tuple:
    """The attempt columns the success statement inserts (not id, not number)."""
    return tuple(
        field
        for field in DeliveryAttempt._meta.concrete_fields
        if field.name not in ("id", "number")
    )


@functools.cache
def _success_sql() -> str:
    fields = _attempt_fields()
    columns = ", ".join(f'"{field.column}"' for field in fields)
    # Identifiers come from the models' metadata; every value is a parameter.
    return f"""
        WITH counted AS (
            UPDATE "{Delivery._meta.db_table}"
            SET "attempt_count" = "attempt_count" + 1, "status" = %s,
                "succeeded_at" = %s, "next_attempt_at" = NULL,
                "lease_expires_at" = NULL, "last_status_code" = %s,
                "last_error" = %s, "updated_at" = %s
            WHERE "id" = %s
            RETURNING "attempt_count"
        )
        INSERT INTO "{DeliveryAttempt._meta.db_table}" ("number", {columns})
        SELECT counted."attempt_count", {", ".join(["%s"] * len(fields))}
        FROM counted
        RETURNING "number"
    """  # noqa: S608


def _observe(
    delivery: Delivery, result: transport.TransportResult, *, accepted_at
) -> None:
    """Count the attempt and, when it ended the delivery, how."""
    metrics.DELIVERY_ATTEMPTS.labels(result=result.outcome).inc()
    metrics.DELIVERY_DURATION.observe(result.duration_ms / 1000)
    if delivery.status == DeliveryStatus.SUCCEEDED:
        metrics.DELIVERIES_SUCCEEDED.inc()
        latency = (delivery.succeeded_at - accepted_at).total_seconds()
        metrics.DELIVERY_LATENCY.observe(max(0.0, latency))
    elif delivery.status == DeliveryStatus.DEAD_LETTER:
        metrics.DELIVERIES_DEAD_LETTERED.inc()


def _receiver_pause(result: transport.TransportResult | None) -> float | None:
    """A 429/503's Retry-After in seconds: the receiver asks us to slow down."""
    if result is None or result.status not in retry.RETRY_AFTER_STATUSES:
        return None
    seconds = retry.parse_retry_after(_header(result.headers, "retry-after"))
    return None if seconds is None else retry.bounded_retry_after(seconds)


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _redacted(headers: dict[str, str]) -> dict[str, str]:
    return {
        name: "[redacted]" if name.lower() in REDACTED_HEADERS else value
        for name, value in headers.items()
    }


def _stored_body(body: bytes) -> str:
    text = body[: settings.WEBHOOK_STORED_RESPONSE_BYTES].decode("utf-8", "replace")
    return text.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL
