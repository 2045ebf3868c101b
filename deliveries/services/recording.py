"""Recording attempts: the attempt row, the delivery's next state, metrics, logs.

Plain successes (2xx to an endpoint with no failure run) are the common case and
are written for a whole batch in one statement. Everything else goes through a
transaction per attempt that also moves the endpoint's health and the retry
schedule on. Both only record on a delivery still in_progress, so recording is
safe to repeat after an error.
"""

import contextlib
import functools
import json
import logging

from django.db import transaction

from deliveries import retry, transport
from deliveries.models import (
    AttemptOutcome,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
)
from deliveries.services.endpoint_health import (
    disabled_reason,
    endpoint_deactivate,
    endpoint_record_failure,
    endpoint_record_success,
)
from deliveries.services.ordering import lines_release
from deliveries.services.scheduling import (
    AttemptDecision,
    mark_dead,
    retry_after_failed_attempt,
    retry_requested_during,
    schedule_retry,
)
from webhooks_project import metrics
from webhooks_project.rawsql import not_by_index, prepared

logger = logging.getLogger(__name__)

GONE_REASON = "receiver answered 410 Gone"


def attempts_store_successes(*, items: list[tuple[Delivery, dict]], now) -> set:
    """Record 2xx attempts and mark their deliveries succeeded, in one statement.

    `items` pairs each delivery (as claimed) with its attempt's stored fields.
    Returns the ids of the deliveries recorded (those still in_progress).
    """
    if not items:
        return set()
    # One JSON document for the whole batch: binding nine arrays of parameters
    # element by element cost more CPU than the rest of the recording.
    rows = json.dumps(
        [
            {
                "delivery_id": str(delivery.pk),
                "response_status": stored["response_status"],
                "error": stored["error"],
                "started_at": stored["started_at"].isoformat(),
                "duration_ms": stored["duration_ms"],
                "outcome": stored["outcome"],
                "request_headers": stored["request_headers"],
                "response_headers": stored["response_headers"],
                "response_body": stored["response_body"],
            }
            for delivery, stored in items
        ]
    )
    # Keyed deliveries' lines go on in the transaction that ends them.
    lines = {(d.endpoint_id, d.ordering_key) for d, _ in items if d.ordering_key}
    with transaction.atomic() if lines else contextlib.nullcontext():
        with prepared(
            _successes_sql(),
            {
                "rows": rows,
                "succeeded": DeliveryStatus.SUCCEEDED,
                "in_progress": DeliveryStatus.IN_PROGRESS,
                "now": now,
            },
        ) as cursor:
            numbers = dict(cursor.fetchall())
        if lines:
            lines_release(
                {(d.endpoint_id, d.ordering_key) for d, _ in items if d.pk in numbers}
            )
    for delivery, stored in items:
        number = numbers.get(delivery.pk)
        if number is None:
            continue  # no longer ours: somebody else moved it on
        delivery.attempt_count = number
        delivery.last_status_code = stored["response_status"]
        delivery.last_error = stored["error"]
        delivery.status = DeliveryStatus.SUCCEEDED
        delivery.succeeded_at = now
        delivery.next_attempt_at = delivery.lease_expires_at = None
        delivery.retry_requested_at = None
        metrics.DELIVERY_DURATION.observe(stored["duration_ms"] / 1000)
        latency = (now - delivery.event.created_at).total_seconds()
        metrics.DELIVERY_LATENCY.observe(max(0.0, latency))
        _log(delivery, number, stored)
    if numbers:
        # The counters once per batch: each increment is a locked file write.
        metrics.DELIVERY_ATTEMPTS.labels(result=AttemptOutcome.SUCCESS).inc(
            len(numbers)
        )
        metrics.DELIVERIES_SUCCEEDED.inc(len(numbers))
    return set(numbers)


@functools.cache
def _successes_sql() -> str:
    delivery = Delivery._meta.db_table
    attempt = DeliveryAttempt._meta.db_table
    # Identifiers come from the models' metadata; every value is a parameter.
    return f"""
        WITH v AS (
            SELECT * FROM json_to_recordset(%(rows)s::json) AS v(
                delivery_id uuid, response_status integer, error text,
                started_at timestamptz, duration_ms integer, outcome text,
                request_headers jsonb, response_headers jsonb, response_body text)
        ), counted AS (
            UPDATE "{delivery}" AS d
            SET "attempt_count" = d."attempt_count" + 1, "status" = %(succeeded)s,
                "succeeded_at" = %(now)s, "next_attempt_at" = NULL,
                "lease_expires_at" = NULL, "retry_requested_at" = NULL,
                "last_status_code" = v.response_status,
                "last_error" = v.error, "updated_at" = %(now)s
            FROM v
            WHERE d."id" = v.delivery_id
              AND {not_by_index('d."status" = %(in_progress)s')}
            RETURNING d."id", d."attempt_count"
        )
        INSERT INTO "{attempt}" (
            "delivery_id", "number", "started_at", "duration_ms", "outcome",
            "request_headers", "response_status", "response_headers",
            "response_body", "error"
        )
        SELECT v.delivery_id, c."attempt_count", v.started_at, v.duration_ms,
               v.outcome, v.request_headers, v.response_status,
               v.response_headers, v.response_body, v.error
        FROM counted AS c JOIN v ON v.delivery_id = c."id"
        RETURNING "delivery_id", "number"
    """  # noqa: S608


def attempt_store(
    *,
    delivery: Delivery,
    result: transport.TransportResult,
    stored: dict,
    pause: float | None,
    now,
) -> AttemptDecision:
    """Store one attempt and move its delivery and endpoint on, atomically."""
    endpoint = delivery.endpoint
    retry_in = None
    with transaction.atomic():
        locked = Delivery.objects.select_for_update().get(pk=delivery.pk)
        if locked.status != DeliveryStatus.IN_PROGRESS:
            return AttemptDecision(attempted=True)  # no longer ours
        number = locked.attempt_count + 1
        DeliveryAttempt.objects.create(delivery=locked, number=number, **stored)
        locked.attempt_count = number
        locked.last_status_code = result.status
        locked.last_error = result.error
        if result.succeeded:
            locked.status = DeliveryStatus.SUCCEEDED
            locked.succeeded_at = now
            locked.next_attempt_at = None
            locked.lease_expires_at = None
            endpoint_record_success(endpoint=endpoint)
        elif result.status == retry.GONE:
            endpoint_deactivate(endpoint_id=locked.endpoint_id, reason=GONE_REASON)
            mark_dead(locked, reason=disabled_reason(GONE_REASON), now=now)
        elif endpoint_record_failure(endpoint=endpoint):
            reason = disabled_reason(endpoint.disabled_reason or "failing")
            mark_dead(locked, reason=reason, now=now)
        elif retry_requested_during(locked, claimed=delivery):
            retry_in = retry_after_failed_attempt(locked, now=now)
        else:
            retry_in = schedule_retry(
                locked, retry_after=pause, spend=pause is None, now=now
            )
        locked.retry_requested_at = None  # this attempt answered any request
        locked.save()
        # Ended or waiting for a retry, it no longer holds its line.
        lines_release({(locked.endpoint_id, locked.ordering_key)})
    locked.event = delivery.event
    _observe(locked, stored)
    _log(locked, number, stored)
    return AttemptDecision(attempted=True, status=locked.status, retry_in=retry_in)


def _log(delivery: Delivery, number: int, stored: dict) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    status_code = stored["response_status"]
    logger.info(
        "delivery %s attempt %d to endpoint %s: %s%s -> %s",
        delivery.pk,
        number,
        delivery.endpoint_id,
        stored["outcome"],
        f" {status_code}" if status_code else "",
        delivery.status,
        extra={
            "tenant_id": delivery.tenant_id,
            "event_id": delivery.event_id,
            "delivery_id": delivery.pk,
            "endpoint_id": delivery.endpoint_id,
            "attempt": number,
            "outcome": stored["outcome"],
            "status_code": status_code,
            "duration_ms": stored["duration_ms"],
            "delivery_status": delivery.status,
        },
    )


def _observe(delivery: Delivery, stored: dict) -> None:
    """Count the attempt and, when it ended the delivery, how."""
    metrics.DELIVERY_ATTEMPTS.labels(result=stored["outcome"]).inc()
    metrics.DELIVERY_DURATION.observe(stored["duration_ms"] / 1000)
    if delivery.status == DeliveryStatus.SUCCEEDED:
        metrics.DELIVERIES_SUCCEEDED.inc()
        latency = (delivery.succeeded_at - delivery.event.created_at).total_seconds()
        metrics.DELIVERY_LATENCY.observe(max(0.0, latency))
    elif delivery.status == DeliveryStatus.DEAD_LETTER:
        metrics.DELIVERIES_DEAD_LETTERED.inc()
