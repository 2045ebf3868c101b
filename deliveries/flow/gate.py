"""Per-endpoint flow control in Redis: pause, circuit breaker, in-flight cap, rate.

Two Lua scripts on Redis's clock, pipelined: one round trip for a whole batch,
one script call per endpoint in it.
- `enter` before an attempt: is the endpoint paused (a receiver's Retry-After), is
  its circuit open (or half-open with a probe already out), is its in-flight cap
  reached, is its token bucket empty? If not, it takes a slot (and, half-open, the
  probe) and lets the attempt run; otherwise it says how long to wait.
- `leave` after it: frees the slot, moves the breaker (consecutive failures, in
  the order their requests were sent, open it with a cooldown that doubles after
  each failed probe, not after attempts that were already in flight when it
  opened; a success closes it),
  pauses the endpoint on Retry-After, and keeps a moving average of durations.

Callers fail open: if Redis is unreachable, deliveries go on without flow control.
"""

import itertools
import logging
import os
import random
import uuid
from dataclasses import dataclass

import redis
from django.conf import settings

from deliveries.flow.refusals import REFUSING_SET
from webhooks_project.redis_client import get_redis, run_script
from webhooks_project.token_bucket import BUCKET_LUA

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

# KEYS: 1 state hash, 2 in-flight zset, 3 refusing zset. ARGV: rate, burst,
# max_in_flight, slot_ms, probe_ms, deadline_ms, hang_ms, hang_factor,
# stalled_ms, endpoint id, then one token per attempt asked for, in order.
# Returns {allowed, wait_ms, reason, probe} for each attempt, flattened. The
# endpoint's token bucket is the tenants' (webhooks_project/token_bucket.py).
_ENTER = (
    BUCKET_LUA
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local slot_ms = tonumber(ARGV[4])
local probe_ms = tonumber(ARGV[5])
local deadline_ms = tonumber(ARGV[6])
local hang_ms = tonumber(ARGV[7])
local hang_factor = tonumber(ARGV[8])
local stalled_ms = tonumber(ARGV[9])
local n = #ARGV - 10
local out = {}
local function refuse_all(wait, reason)
  redis.call('ZADD', KEYS[3], 'GT', now + wait, ARGV[10])
  for i = 1, n do
    out[#out + 1] = 0; out[#out + 1] = wait; out[#out + 1] = reason; out[#out + 1] = 0
  end
  return out
end
local s = redis.call('HMGET', KEYS[1], 'paused_until', 'state', 'open_until',
  'probe_until', 'tokens', 'ts', 'avg_ms', 'last_end')
local paused_until = tonumber(s[1]) or 0
if paused_until > now then
  return refuse_all(paused_until - now, 'paused')
end
-- 0: closed; 1: half-open, the first allowed attempt is the probe; 2: probe out
local probing = 0
if s[2] == 'open' then
  local open_until = tonumber(s[3]) or 0
  if open_until > now then
    return refuse_all(open_until - now, 'circuit_open')
  end
  if (tonumber(s[4]) or 0) > now then
    return refuse_all(tonumber(s[4]) - now, 'half_open')
  end
  probing = 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local flying = redis.call('ZCARD', KEYS[2])
local busy_wait, busy_reason = nil, 'concurrency'
local tokens = nil
if rate > 0 then
  tokens = bucket_refill(tonumber(s[5]), tonumber(s[6]), now, rate, burst)
end
local short = 0
for i = 1, n do
  local allowed, wait, reason, probe = 0, 0, '', 0
  if probing == 2 then
    wait, reason = probe_ms, 'half_open'
  elseif cap > 0 and flying >= cap then
    if busy_wait == nil then
      local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      local started = tonumber(oldest[2]) - slot_ms
      local age = now - started
      -- How long nothing has happened: no request ended, none of those in
      -- flight started. An endpoint whose other slots keep turning over is
      -- busy, however long one of its requests hangs.
      local quiet = now - math.max(started, tonumber(s[8]) or 0)
      local avg = tonumber(s[7])
      local overdue = avg == nil or quiet >= hang_factor * avg
      if overdue and quiet >= hang_ms then
        -- Nothing ended for far longer than its requests take (or none ever
        -- did): it hangs. No slot is sure to free before its oldest
        -- request's deadline.
        busy_reason = 'hanging'
        busy_wait = math.max(50, deadline_ms - age)
        redis.call('ZADD', KEYS[3], 'GT', now + busy_wait, ARGV[10])
      elseif avg ~= nil and overdue and quiet >= stalled_ms then
        -- Overdue, not long enough to call it hanging: refuse until then, so
        -- that its backlog stops filling the workers' prefetch meanwhile. (An
        -- endpoint with no usual duration yet may just be slow: not before.)
        busy_reason = 'stalled'
        busy_wait = math.max(50, hang_ms - quiet)
        redis.call('ZADD', KEYS[3], 'GT', now + busy_wait, ARGV[10])
      else
        -- A slot frees when a request ends: expect the usual duration, or
        -- longer when nothing has ended for that long already.
        busy_wait = math.max(50, math.floor(math.max(avg or 0, quiet)))
      end
    end
    wait, reason = busy_wait, busy_reason
  elseif rate > 0 and tokens < 1 then
    -- Each refused attempt waits for a token of its own.
    short = short + 1
    wait, reason = bucket_wait_ms(short - tokens, rate), 'rate_limited'
  else
    allowed = 1
    if rate > 0 then tokens = tokens - 1 end
    if probing == 1 then
      probe, probing = 1, 2
      redis.call('HSET', KEYS[1], 'probe_until', now + probe_ms)
      redis.call('ZADD', KEYS[3], 'GT', now + probe_ms, ARGV[10])
    end
    redis.call('ZADD', KEYS[2], now + slot_ms, ARGV[10 + i])
    flying = flying + 1
  end
  out[#out + 1] = allowed; out[#out + 1] = wait
  out[#out + 1] = reason; out[#out + 1] = probe
end
if rate > 0 then
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
end
redis.call('PEXPIRE', KEYS[2], slot_ms * 2)
return out
"""
)

# KEYS: 1 state hash, 2 in-flight zset, 3 open-circuits set, 4 refusing zset.
# ARGV: threshold, base_cooldown_ms, max_cooldown_ms, endpoint id, then five per
# attempt, in the order they ended: token, succeeded, duration_ms, pause_ms,
# probe. Returns the breaker state after each attempt, with a '!' where that
# attempt opened (or reopened) or closed the circuit.
_LEAVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local threshold = tonumber(ARGV[1])
local base = tonumber(ARGV[2])
local longest = tonumber(ARGV[3])
local endpoint = ARGV[4]
local s = redis.call('HMGET', KEYS[1], 'avg_ms', 'state', 'failures', 'cooldown_ms',
  'paused_until', 'ok_start')
local avg = tonumber(s[1])
local paused_until = tonumber(s[5]) or 0
local state = s[2] or 'closed'
local failures = tonumber(s[3]) or 0
local cooldown = tonumber(s[4]) or 0
local ok_start = tonumber(s[6]) or 0
local out = {}
for i = 5, #ARGV, 5 do
  local changed = false
  redis.call('ZREM', KEYS[2], ARGV[i])
  local duration = tonumber(ARGV[i + 2])
  local started = now - duration
  avg = math.floor((avg or duration) * 0.8 + duration * 0.2)
  local pause_ms = tonumber(ARGV[i + 3])
  if pause_ms > 0 then
    -- The receiver asked us to slow down: flow control, not a failure.
    paused_until = now + pause_ms
    redis.call('HSET', KEYS[1], 'paused_until', paused_until, 'probe_until', 0)
    redis.call('ZADD', KEYS[4], 'GT', paused_until, endpoint)
  elseif ARGV[i + 1] == '1' then
    ok_start = math.max(ok_start, started)
    if state ~= 'closed' or failures > 0 then
      if state ~= 'closed' then changed = true end
      state, failures, cooldown = 'closed', 0, 0
      redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0,
        'cooldown_ms', 0, 'probe_until', 0)
      redis.call('SREM', KEYS[3], endpoint)
    end
    if paused_until <= now then
      redis.call('ZREM', KEYS[4], endpoint)
    end
  elseif state ~= 'closed' or started >= ok_start then
    -- Consecutive failures are counted in the order requests were sent: one
    -- sent before a request that succeeded does not count, so the timeouts of
    -- requests that hung while the others were answered (they end together,
    -- later) do not open the circuit of an endpoint that answers most of them.
    failures = failures + 1
    local opens = nil
    if state == 'open' then
      -- Only a failed probe stretches the cooldown: attempts that began before
      -- the circuit opened say nothing new about the endpoint.
      if ARGV[i + 4] == '1' then
        opens = math.min(longest, math.max(base, cooldown * 2))
      end
    elseif failures >= threshold then
      opens = base
    end
    if opens ~= nil then
      state, cooldown, changed = 'open', opens, true
      redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + opens,
        'cooldown_ms', opens, 'probe_until', 0)
      redis.call('SADD', KEYS[3], endpoint)
      redis.call('ZADD', KEYS[4], math.max(now + opens, paused_until), endpoint)
    end
  end
  out[#out + 1] = changed and (state .. '!') or state
end
redis.call('HSET', KEYS[1], 'avg_ms', avg, 'failures', failures, 'last_end', now,
  'ok_start', ok_start)
return out
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
        answers = run_script(_ENTER, calls)
    except redis.RedisError as exc:
        logger.warning("flow control skipped, Redis unavailable: %s", exc)
        return [FAIL_OPEN for _ in requests]
    passes: list[Pass] = [FAIL_OPEN] * len(requests)
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
        answers = run_script(_LEAVE, calls)
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
