"""Token buckets in Redis: one Lua script, Redis's clock, one round trip per check."""

import logging
import math
from dataclasses import dataclass

import redis

from webhooks_project.redis_client import get_redis

logger = logging.getLogger(__name__)

# KEYS[1]: bucket hash. ARGV: rate (tokens/s), burst (capacity), cost.
# Returns {allowed (0/1), tokens left (floor), ms until `cost` tokens are there,
# ms until the bucket is full}.
_BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then
  tokens = burst
  ts = now
end
local elapsed = math.max(0, now - ts)
tokens = math.min(burst, tokens + elapsed * rate / 1000)
local allowed = 0
local wait_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait_ms = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
local full_ms = math.ceil((burst - tokens) * 1000 / rate)
redis.call('PEXPIRE', KEYS[1], full_ms + 1000)
return {allowed, math.floor(tokens), wait_ms, full_ms}
"""


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
        script = _script()
        allowed, remaining, wait_ms, full_ms = script(
            keys=[key], args=[rate, burst, cost]
        )
    except redis.RedisError as exc:
        logger.warning("rate limit check skipped, Redis unavailable: %s", exc)
        return None
    return BucketResult(
        allowed=bool(allowed),
        limit=burst,
        remaining=int(remaining),
        retry_after=wait_ms / 1000,
        reset_after=full_ms / 1000,
    )


def retry_after_header(seconds: float) -> str:
    """Whole seconds for a Retry-After header (at least 1)."""
    return str(max(1, math.ceil(seconds)))


_scripts: dict[int, object] = {}


def _script():
    client = get_redis()
    script = _scripts.get(id(client))
    if script is None:
        script = client.register_script(_BUCKET_SCRIPT)
        _scripts.clear()
        _scripts[id(client)] = script
    return script
