"""Per-endpoint flow control in Redis: pause, circuit breaker, in-flight cap, rate.

Two Lua scripts on Redis's clock, pipelined: one round trip for a whole batch.
- `enter` before an attempt: is the endpoint paused (a receiver's Retry-After), is
  its circuit open (or half-open with a probe already out), is its in-flight cap
  reached, is its token bucket empty? If not, it takes a slot (and, half-open, the
  probe) and lets the attempt run; otherwise it says how long to wait.
- `leave` after it: frees the slot, moves the breaker (consecutive failures open
  it with a cooldown that doubles after each failed probe, not after attempts
  that were already in flight when it opened; a success closes it),
  pauses the endpoint on Retry-After, and keeps a moving average of durations.

Callers fail open: if Redis is unreachable, deliveries go on without flow control.
"""

import logging
import random
import uuid
from dataclasses import dataclass

import redis
from django.conf import settings

from webhooks_project.redis_client import get_redis

logger = logging.getLogger(__name__)

OPEN_SET = "fc:circuits:open"

# KEYS: 1 state hash, 2 in-flight zset. ARGV: rate, burst, max_in_flight,
# slot_ms, probe_ms, token. Returns {allowed, wait_ms, reason, probe}.
_ENTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local slot_ms = tonumber(ARGV[4])
local probe_ms = tonumber(ARGV[5])
local s = redis.call('HMGET', KEYS[1], 'paused_until', 'state', 'open_until',
  'probe_until', 'tokens', 'ts', 'avg_ms')
local paused_until = tonumber(s[1]) or 0
if paused_until > now then
  return {0, paused_until - now, 'paused', 0}
end
local probe = 0
if s[2] == 'open' then
  local open_until = tonumber(s[3]) or 0
  if open_until > now then
    return {0, open_until - now, 'circuit_open', 0}
  end
  if (tonumber(s[4]) or 0) > now then
    return {0, tonumber(s[4]) - now, 'half_open', 0}
  end
  probe = 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if cap > 0 and redis.call('ZCARD', KEYS[2]) >= cap then
  -- A slot frees when a request ends: expect the usual duration, or longer
  -- when the oldest request in flight has already run that long.
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  local age = now - (tonumber(oldest[2]) - slot_ms)
  local avg = tonumber(s[7]) or 0
  return {0, math.max(50, math.floor(math.max(avg, age))), 'concurrency', 0}
end
if rate > 0 then
  local tokens = tonumber(s[5])
  local ts = tonumber(s[6]) or now
  if tokens == nil then tokens = burst end
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  if tokens < 1 then
    redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
    return {0, math.ceil((1 - tokens) * 1000 / rate), 'rate_limited', 0}
  end
  redis.call('HSET', KEYS[1], 'tokens', tokens - 1, 'ts', now)
end
if probe == 1 then
  redis.call('HSET', KEYS[1], 'probe_until', now + probe_ms)
end
redis.call('ZADD', KEYS[2], now + slot_ms, ARGV[6])
redis.call('PEXPIRE', KEYS[2], slot_ms * 2)
return {1, 0, '', probe}
"""

# KEYS: 1 state hash, 2 in-flight zset, 3 open-circuits set. ARGV: token,
# succeeded, duration_ms, pause_ms, threshold, base_cooldown_ms,
# max_cooldown_ms, endpoint id, probe. Returns the breaker state after the attempt.
_LEAVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
local duration = tonumber(ARGV[3])
local avg = tonumber(redis.call('HGET', KEYS[1], 'avg_ms')) or duration
redis.call('HSET', KEYS[1], 'avg_ms', math.floor(avg * 0.8 + duration * 0.2))
local pause_ms = tonumber(ARGV[4])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if pause_ms > 0 then
  -- The receiver asked us to slow down: flow control, not a failure.
  redis.call('HSET', KEYS[1], 'paused_until', now + pause_ms, 'probe_until', 0)
  return state
end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'cooldown_ms', 0,
    'probe_until', 0)
  redis.call('SREM', KEYS[3], ARGV[8])
  return 'closed'
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local base = tonumber(ARGV[6])
local cooldown
if state == 'open' then
  if ARGV[9] ~= '1' then
    -- Began before the circuit opened: it says nothing new about the endpoint.
    return 'open'
  end
  local last = tonumber(redis.call('HGET', KEYS[1], 'cooldown_ms')) or 0
  cooldown = math.min(tonumber(ARGV[7]), math.max(base, last * 2))
elseif failures >= tonumber(ARGV[5]) then
  cooldown = base
else
  return state
end
redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + cooldown,
  'cooldown_ms', cooldown, 'probe_until', 0)
redis.call('SADD', KEYS[3], ARGV[8])
return 'open'
"""


@dataclass(frozen=True)
class Pass:
    """The answer of `enter`: go ahead (holding `token`), or wait `wait` seconds."""

    allowed: bool
    wait: float = 0.0
    reason: str = ""
    probe: bool = False
    token: str = ""


FAIL_OPEN = Pass(allowed=True)


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


def enter(*, endpoint_id, rate_limit: int | None) -> Pass:
    """Ask to attempt a delivery to this endpoint now."""
    return enter_many([(endpoint_id, rate_limit)])[0]


def enter_many(requests: list[tuple[object, int | None]]) -> list[Pass]:
    """`enter` for several (endpoint id, rate limit) pairs, in one round trip.

    Each pair is one attempt: two for the same endpoint take two slots (and two
    tokens), in order.
    """
    if not requests:
        return []
    slot_ms = _slot_ms()
    tokens = [uuid.uuid4().hex for _ in requests]
    try:
        client = get_redis()
        script = _script("enter")
        pipe = client.pipeline(transaction=False)
        for (endpoint_id, rate_limit), token in zip(requests, tokens, strict=True):
            rate = rate_limit or 0
            script(
                keys=_keys(endpoint_id),
                args=[
                    rate,
                    max(1, rate),
                    settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT,
                    slot_ms,
                    slot_ms,
                    token,
                ],
                client=pipe,
            )
        answers = pipe.execute()
    except redis.RedisError as exc:
        logger.warning("flow control skipped, Redis unavailable: %s", exc)
        return [FAIL_OPEN for _ in requests]
    return [_pass(answer, token) for answer, token in zip(answers, tokens, strict=True)]


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


def leave(
    *,
    endpoint_id,
    token: str,
    succeeded: bool,
    duration_ms: int,
    pause: float | None = None,
    probe: bool = False,
) -> str | None:
    """Report an attempt's outcome; return the breaker state (None without Redis)."""
    report = Report(endpoint_id, token, succeeded, duration_ms, pause, probe)
    return leave_many([report])[0]


def leave_many(reports: list[Report]) -> list[str | None]:
    """`leave` for several attempts in one round trip; the breaker state after each."""
    if not reports:
        return []
    try:
        client = get_redis()
        script = _script("leave")
        pipe = client.pipeline(transaction=False)
        for report in reports:
            state_key, inflight_key = _keys(report.endpoint_id)
            script(
                keys=[state_key, inflight_key, OPEN_SET],
                args=[
                    report.token,
                    "1" if report.succeeded else "0",
                    report.duration_ms,
                    int((report.pause or 0) * 1000),
                    settings.WEBHOOK_BREAKER_FAILURES,
                    int(settings.WEBHOOK_BREAKER_COOLDOWN * 1000),
                    int(settings.WEBHOOK_BREAKER_MAX_COOLDOWN * 1000),
                    str(report.endpoint_id),
                    "1" if report.probe else "0",
                ],
                client=pipe,
            )
        states = pipe.execute()
    except redis.RedisError as exc:
        logger.warning("flow control not updated, Redis unavailable: %s", exc)
        return [None for _ in reports]
    return [state.decode() if isinstance(state, bytes) else state for state in states]


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


def reset(endpoint_id) -> None:
    """Forget an endpoint's flow-control state (closes its circuit)."""
    state_key, inflight_key = _keys(endpoint_id)
    try:
        client = get_redis()
        client.delete(state_key, inflight_key)
        client.srem(OPEN_SET, str(endpoint_id))
    except redis.RedisError as exc:
        logger.warning("flow control not reset, Redis unavailable: %s", exc)


_scripts: dict[tuple[int, str], object] = {}


def _script(name: str):
    client = get_redis()
    key = (id(client), name)
    script = _scripts.get(key)
    if script is None:
        script = client.register_script(_ENTER if name == "enter" else _LEAVE)
        _scripts[key] = script
    return script
