"""Delivery attempts in three steps: admit (claim + flow control), send, record.

Each step takes a batch: the delivery engine (deliveries/engine) runs them as a
pipeline over many deliveries at once, one statement and one Redis round trip per
batch; `delivery_run` runs them in a row for one delivery (the `deliver`
task's body, and what tests call).
"""

import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from deliveries import retry, transport
from deliveries.attempt_log import stored_body, stored_headers
from deliveries.envelope import envelope_body, signed_headers
from deliveries.flow import gate
from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.claim import deliveries_claim
from deliveries.services.endpoint_health import disabled_reason
from deliveries.services.postponing import deliveries_postpone
from deliveries.services.recording import attempt_store, attempts_store_successes
from deliveries.services.scheduling import (
    SKIPPED,
    AttemptDecision,
    delivery_dead_letter,
)

logger = logging.getLogger(__name__)


@dataclass
class Attempt:
    """A claimed delivery that flow control let through, and what its POST gave."""

    delivery: Delivery
    passed: gate.Pass  # the gate's answer: its slot's token, whether a probe
    headers: dict[str, str] = field(default_factory=dict)
    started_at: datetime | None = None
    result: transport.TransportResult | None = None


@dataclass(frozen=True)
class Admission:
    """The outcome of admitting a batch: attempts to make, refused, and settled."""

    ready: list[Attempt]
    # Claimed, but flow control said wait: the caller postpones or holds them.
    refused: list[tuple[Delivery, gate.Pass]]
    # Deliveries that need nothing more now (not due, held elsewhere, final, or
    # dead-lettered), by id as given.
    settled: dict[str, AttemptDecision]


def deliveries_admit(*, delivery_ids: list) -> Admission:
    """Claim the due deliveries of `delivery_ids` and pass them through flow control.

    Deliveries of disabled endpoints go to the dead-letter queue. Those flow
    control refuses stay claimed: `deliveries_postpone` puts them off without
    spending an attempt.
    """
    claimed = deliveries_claim(delivery_ids=delivery_ids)
    settled = {str(delivery_id): SKIPPED for delivery_id in delivery_ids}
    live = []
    for delivery in claimed:
        endpoint = delivery.endpoint
        if endpoint.is_active:
            live.append(delivery)
            continue
        reason = disabled_reason(endpoint.disabled_reason or "inactive")
        delivery_dead_letter(delivery=delivery, reason=reason)
        settled[str(delivery.pk)] = AttemptDecision(
            attempted=False, status=DeliveryStatus.DEAD_LETTER
        )
    ready, refused = deliveries_enter_gate(deliveries=live)
    for delivery in (*(a.delivery for a in ready), *(d for d, _ in refused)):
        del settled[str(delivery.pk)]
    return Admission(ready=ready, refused=refused, settled=settled)


def deliveries_enter_gate(
    *, deliveries: list[Delivery]
) -> tuple[list[Attempt], list[tuple[Delivery, gate.Pass]]]:
    """Ask flow control for claimed deliveries: attempts to make, and refusals."""
    answers = gate.enter_many(
        [
            (delivery.endpoint_id, delivery.endpoint.rate_limit)
            for delivery in deliveries
        ],
        caps={d.endpoint_id: d.endpoint.in_flight_cap for d in deliveries},
    )
    ready, refused = [], []
    for delivery, answer in zip(deliveries, answers, strict=True):
        if answer.allowed:
            ready.append(Attempt(delivery=delivery, passed=answer))
        else:
            refused.append((delivery, answer))
    return ready, refused


def attempt_request(
    attempt: Attempt,
    *,
    looked_up: Future | None = None,
    started: float | None = None,
) -> transport.Request | transport.TransportResult:
    """Sign an admitted attempt and check its destination: the request to send.

    A destination the address policy refuses, or a name that does not resolve,
    comes back as the attempt's result instead (nothing is sent). `looked_up`:
    the endpoint URL's `transport.lookup_started`, done, which began at
    `started` (monotonic).
    """
    delivery = attempt.delivery
    endpoint = delivery.endpoint
    body = envelope_body(delivery.event)
    attempt.headers = signed_headers(
        event_id=str(delivery.event_id),
        body=body,
        secrets=endpoint.active_secrets(),
        extra=endpoint.headers,
    )
    attempt.started_at = timezone.now()
    return transport.prepare(
        url=endpoint.url,
        body=body,
        headers=attempt.headers,
        looked_up=looked_up,
        started=started,
        owner=str(delivery.tenant_id),
    )


def attempt_send(attempt: Attempt) -> Attempt:
    """Sign and POST one admitted attempt on this thread; never raises on HTTP."""
    try:
        prepared = attempt_request(attempt)
        if isinstance(prepared, transport.TransportResult):
            attempt.result = prepared
        else:
            attempt.result = transport.perform(prepared)
    except BaseException:
        # A bug, not a receiver's failure: free the endpoint's slot and raise.
        gate.leave_many([_report(attempt)])
        raise
    return attempt


def attempts_store(*, attempts: list[Attempt]) -> list[AttemptDecision]:
    """Store sent attempts and move their deliveries on.

    Successes to endpoints in good standing are recorded together in one
    statement; anything else (failures, 410, the first success after failures)
    in a transaction of its own. An attempt whose delivery is no longer held
    (in_progress) is not recorded again: recording is safe to repeat after an
    error. Flow control hears of the attempts through `attempts_leave_gate`.
    """
    now = timezone.now()
    decisions: dict[int, AttemptDecision] = {}
    fast = [attempt for attempt in attempts if _plain_success(attempt)]
    recorded = attempts_store_successes(
        items=[(attempt.delivery, _stored(attempt)) for attempt in fast], now=now
    )
    for attempt in fast:
        held = attempt.delivery.pk in recorded
        status = DeliveryStatus.SUCCEEDED if held else None
        decisions[id(attempt)] = AttemptDecision(attempted=True, status=status)
    for attempt in attempts:
        if id(attempt) not in decisions:
            decisions[id(attempt)] = attempt_store(
                delivery=attempt.delivery,
                result=attempt.result,
                stored=_stored(attempt),
                pause=_receiver_pause(attempt.result),
                now=now,
            )
    return [decisions[id(attempt)] for attempt in attempts]


def attempts_leave_gate(*, attempts: list[Attempt]) -> None:
    """Tell flow control how the attempts went (frees their in-flight slots)."""
    gate.leave_many([_report(attempt) for attempt in attempts])


def delivery_run(*, delivery_id) -> AttemptDecision:
    """Run the next attempt of a delivery if it is due and nobody else holds it.

    Safe to call again for the same id: a delivery already final, held by a live
    worker, or not yet due is left alone.
    """
    admission = deliveries_admit(delivery_ids=[delivery_id])
    if admission.refused:
        [(delivery, answer)] = admission.refused
        return deliveries_postpone(items=[(delivery, answer.wait, answer.reason)])[0]
    if not admission.ready:
        return admission.settled[str(delivery_id)]
    [attempt] = admission.ready
    attempt_send(attempt)
    try:
        return attempts_store(attempts=[attempt])[0]
    finally:
        attempts_leave_gate(attempts=[attempt])


def _plain_success(attempt: Attempt) -> bool:
    return attempt.result.succeeded and attempt.delivery.endpoint.failing_since is None


def _stored(attempt: Attempt) -> dict:
    """The attempt record's fields, as stored."""
    result = attempt.result
    return {
        "started_at": attempt.started_at,
        "duration_ms": result.duration_ms,
        "outcome": result.outcome,
        "request_headers": stored_headers(attempt.headers),
        "response_status": result.status,
        "response_headers": stored_headers(result.headers),
        "response_body": stored_body(result.body),
        "error": result.error,
    }


def _report(attempt: Attempt) -> gate.Report:
    result = attempt.result
    return gate.Report(
        endpoint_id=attempt.delivery.endpoint_id,
        token=attempt.passed.token,
        succeeded=result is not None and result.succeeded,
        duration_ms=result.duration_ms if result is not None else 0,
        pause=_receiver_pause(result),
        probe=attempt.passed.probe,
    )


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
