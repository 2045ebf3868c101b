"""Token buckets in Redis: one Lua implementation, for tenants and endpoints alike.

`BUCKET_LUA` defines the bucket's two rules as Lua functions, on Redis's clock
(milliseconds): refill (`rate` tokens a second, at most `burst`, full at first)
and the wait for missing tokens. The tenants' buckets (`take`, one round trip
per check) and the endpoints' in the flow-control gate (deliveries/flow/gate.py)
both run them.
"""

import logging
import math
from dataclasses import dataclass

import redis

from webhooks_project.redis_client import run_script

logger = logging.getLogger(__name__)

BUCKET_LUA = """
local function bucket_refill(tokens, ts, now, rate, burst)
  if tokens == nil then return burst end
  return math.min(burst, tokens + math.max(0, now - (ts or now)) * rate / 1000)
end
local function bucket_wait_ms(missing, rate)
  return math.ceil(missing * 1000 / rate)
end
"""

# KEYS[1]: bucket hash. ARGV: rate (tokens/s), burst (capacity), cost.
# Returns {allowed (0/1), tokens left (floor), ms until `cost` tokens are there,
# ms until the bucket is full}.
_TAKE = (
    BUCKET_LUA
    + """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = bucket_refill(tonumber(state[1]), tonumber(state[2]), now, rate, burst)
local allowed = 0
local wait_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait_ms = bucket_wait_ms(cost - tokens, rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
local full_ms = bucket_wait_ms(burst - tokens, rate)
redis.call('PEXPIRE', KEYS[1], full_ms + 1000)
return {allowed, math.floor(tokens), wait_ms, full_ms}
"""
)


# KEYS[1]: bucket hash. ARGV: rate (tokens/s), burst (capacity), count.
# Puts `count` tokens back (at most a full bucket).
_GIVE_BACK = (
    BUCKET_LUA
    + """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = bucket_refill(tonumber(state[1]), tonumber(state[2]), now, rate, burst)
tokens = math.min(burst, tokens + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], bucket_wait_ms(burst - tokens, rate) + 1000)
return 1
"""
)


@dataclass(frozen=True)
class BucketResult:
    """The outcome of one take from a bucket."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    reset_after: float


def take(*, key: str, rate: float, burst: int, cost: int = 1) -> BucketResult | None:
    """Take `cost` tokens from bucket `key`; None when Redis cannot be reached.

    Callers fail open on None: a Redis outage must not refuse accepted traffic.
    """
    try:
        [answer] = run_script(_TAKE, [((key,), [rate, burst, cost])])
    except redis.RedisError as exc:
        logger.warning("rate limit check skipped, Redis unavailable: %s", exc)
        return None
    allowed, remaining, wait_ms, full_ms = answer
    return BucketResult(
        allowed=bool(allowed),
        limit=burst,
        remaining=int(remaining),
        retry_after=wait_ms / 1000,
        reset_after=full_ms / 1000,
    )


def give_back(*, key: str, rate: float, burst: int, count: int) -> None:
    """Return `count` tokens taken for work that was then refused (best effort)."""
    try:
        run_script(_GIVE_BACK, [((key,), [rate, burst, count])])
    except redis.RedisError as exc:
        logger.warning("rate limit tokens not given back, Redis unavailable: %s", exc)


def retry_after_header(seconds: float) -> str:
    """Whole seconds for a Retry-After header (at least 1)."""
    return str(max(1, math.ceil(seconds)))
