"""Per-endpoint flow control in Redis: pause, circuit breaker, in-flight cap, rate.

Two Lua scripts on Redis's clock (gate_scripts.py), pipelined: one round trip for
a whole batch, one script call per endpoint in it.
- `enter` before an attempt: is the endpoint paused (a receiver's Retry-After), is
  its circuit open (or half-open with a probe already out), is its in-flight cap
  reached, is its token bucket empty? If not, it takes a slot (and, half-open, the
  probe) and lets the attempt run; otherwise it says how long to wait.
- `leave` after it: frees the slot, moves the breaker (consecutive failures, in
  the order their requests were sent, open it with a cooldown that doubles after
  each failed probe, not after attempts that were already in flight when it
  opened; a success closes it),
  pauses the endpoint on Retry-After, and keeps a moving average of durations.

Without Redis, `enter` fails closed: a worker that cannot reach it cannot know how
many requests the other workers have in flight to an endpoint, so it sends none
and postpones what it claimed ("unmetered", a few seconds, no attempt spent);
workers that reach Redis deliver meanwhile, and all of them again once it is back.
`leave` cannot free the slots then: they expire (`_slot_ms`).
"""

import itertools
import logging
import os
import random
import uuid
from dataclasses import dataclass

import redis
from django.conf import settings

from deliveries.flow.gate_scripts import ENTER, LEAVE
from deliveries.flow.refusals import REFUSING_SET
from webhooks_project.redis_client import get_redis, run_script

logger = logging.getLogger(__name__)

OPEN_SET = "fc:circuits:open"
# An endpoint at its cap hangs when none of its requests has ended (and none
# of those in flight started) for at least this long (ms) and this many times
# its usual duration (or none ever ended): its overflow waits for its oldest
# request's deadline. One request hanging while the other slots turn over is
# busy, not hanging.
HANGING_AFTER_MS = 1000
HANGING_FACTOR = 10
# Before that, from this long (ms) on, such an endpoint is `stalled` if it has
# a usual duration to be overdue against: refused until it may be called
# hanging, so that its backlog waits in PostgreSQL rather than in the workers'
# prefetch (a success takes it off the list). One that never answered yet may
# be slow rather than dead (a new endpoint taking 300 ms): it waits for the
# hanging rule.
STALLED_AFTER_MS = 250


@dataclass(frozen=True)
class Pass:
    """The answer of `enter`: go ahead (holding `token`), or wait `wait` seconds."""

    allowed: bool
    wait: float = 0.0
    reason: str = ""
    probe: bool = False
    token: str = ""


# How long (seconds) a delivery waits when Redis cannot be asked: short enough to
# go soon after Redis is back, long enough not to churn the claim meanwhile (it
# waits in RabbitMQ's delayed delivery, scheduling.POSTPONE_BROKER_MAX).
UNMETERED_WAIT = (2.0, 4.0)
# The reason of that refusal: the worker's, not the endpoint's.
UNMETERED = "unmetered"


def _unmetered() -> Pass:
    wait = random.uniform(*UNMETERED_WAIT)  # noqa: S311 (not a secret)
    return Pass(allowed=False, wait=wait, reason=UNMETERED)


_TOKEN_PREFIX = f"{os.getpid()}:{uuid.uuid4().hex[:8]}:"
_token_counter = itertools.count()


def _token() -> str:
    """An id for one attempt's in-flight slot, unique across processes."""
    return f"{_TOKEN_PREFIX}{next(_token_counter)}"


def _keys(endpoint_id) -> tuple[str, str]:
    return f"fc:ep:{endpoint_id}", f"fc:ep:{endpoint_id}:inflight"


def _slot_ms() -> int:
    """How long an attempt may hold its in-flight slot before it counts as gone."""
    return int(
        1000
        * (
            settings.WEBHOOK_CONNECT_TIMEOUT
            + settings.WEBHOOK_RESPONSE_TIMEOUT
            + settings.WEBHOOK_PROGRESS_LEASE_MARGIN
        )
    )


def enter_many(
    requests: list[tuple[object, int | None]], *, caps: dict | None = None
) -> list[Pass]:
    """Ask to attempt deliveries now: (endpoint id, rate limit) pairs, one round trip.

    Each pair is one attempt: two for the same endpoint take two slots (and two
    tokens), in order. One script call per endpoint asks for all of its attempts.
    `caps`: the endpoints' in-flight caps (`Endpoint.in_flight_cap`; those not
    given have WEBHOOK_ENDPOINT_MAX_IN_FLIGHT).
    """
    if not requests:
        return []
    slot_ms = _slot_ms()
    deadline_ms = int(
        1000 * (settings.WEBHOOK_CONNECT_TIMEOUT + settings.WEBHOOK_RESPONSE_TIMEOUT)
    )
    by_endpoint: dict[object, list[int]] = {}
    for index, (endpoint_id, _) in enumerate(requests):
        by_endpoint.setdefault(endpoint_id, []).append(index)
    tokens = [_token() for _ in requests]
    caps = caps or {}
    calls = []
    for endpoint_id, indexes in by_endpoint.items():
        rate = requests[indexes[0]][1] or 0
        cap = caps.get(endpoint_id, settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT)
        args = [rate, max(1, rate), cap, slot_ms, slot_ms, deadline_ms]
        args += [HANGING_AFTER_MS, HANGING_FACTOR, STALLED_AFTER_MS, str(endpoint_id)]
        keys = (*_keys(endpoint_id), REFUSING_SET)
        calls.append((keys, args + [tokens[i] for i in indexes]))
    try:
        answers = run_script(ENTER, calls)
    except redis.RedisError as exc:
        logger.warning("deliveries postponed, Redis unavailable: %s", exc)
        return [_unmetered() for _ in requests]
    passes: list[Pass] = [Pass(allowed=False)] * len(requests)
    for indexes, flat in zip(by_endpoint.values(), answers, strict=True):
        for position, index in enumerate(indexes):
            answer = flat[position * 4 : position * 4 + 4]
            passes[index] = _pass(answer, tokens[index])
    return passes


def _pass(answer, token: str) -> Pass:
    allowed, wait_ms, reason, probe = answer
    if allowed:
        return Pass(allowed=True, probe=bool(probe), token=token)
    reason = reason.decode() if isinstance(reason, bytes) else reason
    # Spread the wake-ups of deliveries that wait on the same endpoint.
    wait = wait_ms / 1000 * random.uniform(1.0, 1.25)  # noqa: S311 (not a secret)
    return Pass(allowed=False, wait=wait, reason=reason)


@dataclass(frozen=True)
class Report:
    """What one attempt that `enter` let through came to, for `leave`."""

    endpoint_id: object
    token: str
    succeeded: bool
    duration_ms: int
    pause: float | None = None
    probe: bool = False


def leave_many(reports: list[Report]) -> list[str | None]:
    """Report attempts' outcomes in one round trip; the breaker state after each.

    One script call per endpoint reports its attempts in the order given.
    """
    if not reports:
        return []
    by_endpoint: dict[object, list[int]] = {}
    for index, report in enumerate(reports):
        by_endpoint.setdefault(report.endpoint_id, []).append(index)
    calls = []
    for endpoint_id, indexes in by_endpoint.items():
        args: list = [
            settings.WEBHOOK_BREAKER_FAILURES,
            int(settings.WEBHOOK_BREAKER_COOLDOWN * 1000),
            int(settings.WEBHOOK_BREAKER_MAX_COOLDOWN * 1000),
            str(endpoint_id),
        ]
        for index in indexes:
            report = reports[index]
            args += [
                report.token,
                "1" if report.succeeded else "0",
                report.duration_ms,
                int((report.pause or 0) * 1000),
                "1" if report.probe else "0",
            ]
        state_key, inflight_key = _keys(endpoint_id)
        calls.append(((state_key, inflight_key, OPEN_SET, REFUSING_SET), args))
    try:
        answers = run_script(LEAVE, calls)
    except redis.RedisError as exc:
        logger.warning("flow control not updated, Redis unavailable: %s", exc)
        return [None for _ in reports]
    states: list[str | None] = [None] * len(reports)
    for (endpoint_id, indexes), flat in zip(by_endpoint.items(), answers, strict=True):
        for index, answer in zip(indexes, flat, strict=True):
            state = answer.decode() if isinstance(answer, bytes) else answer
            if state.endswith("!"):
                state = state[:-1]
                _log_change(endpoint_id, state, probe=reports[index].probe)
            states[index] = state
    return states


def _log_change(endpoint_id, state: str, *, probe: bool) -> None:
    if state == "open":
        logger.warning(
            "circuit of endpoint %s opened%s",
            endpoint_id,
            " again: its probe failed" if probe else "",
            extra={"endpoint_id": endpoint_id, "circuit": state},
        )
    else:
        logger.info(
            "circuit of endpoint %s closed",
            endpoint_id,
            extra={"endpoint_id": endpoint_id, "circuit": state},
        )


def circuit(endpoint_id) -> dict:
    """The endpoint's breaker: state, consecutive failures, reopen time (ms)."""
    try:
        raw = get_redis().hmget(
            _keys(endpoint_id)[0], "state", "failures", "open_until", "paused_until"
        )
    except redis.RedisError:
        return {"state": "unknown", "failures": None, "open_until": None}
    state, failures, open_until, paused_until = (
        value.decode() if value is not None else None for value in raw
    )
    return {
        "state": state or "closed",
        "failures": int(failures or 0),
        "open_until_ms": int(float(open_until)) if state == "open" else None,
        "paused_until_ms": int(float(paused_until)) if paused_until else None,
    }


def open_circuit_count() -> int | None:
    """How many endpoints have an open circuit (None without Redis)."""
    try:
        return get_redis().scard(OPEN_SET)
    except redis.RedisError:
        return None


def circuits_open(endpoint_ids) -> set[str]:
    """Which of `endpoint_ids` have an open circuit, half-open ones included.

    Empty without Redis (callers fail open).
    """
    ids = [str(endpoint_id) for endpoint_id in endpoint_ids]
    if not ids:
        return set()
    try:
        flags = get_redis().smismember(OPEN_SET, ids)
    except redis.RedisError as exc:
        logger.warning("open circuits unknown, Redis unavailable: %s", exc)
        return set()
    return {endpoint_id for endpoint_id, flag in zip(ids, flags, strict=True) if flag}


def reset(endpoint_id) -> None:
    """Forget an endpoint's flow-control state (closes its circuit)."""
    state_key, inflight_key = _keys(endpoint_id)
    try:
        client = get_redis()
        client.delete(state_key, inflight_key)
        client.srem(OPEN_SET, str(endpoint_id))
        client.zrem(REFUSING_SET, str(endpoint_id))
    except redis.RedisError as exc:
        logger.warning("flow control not reset, Redis unavailable: %s", exc)
