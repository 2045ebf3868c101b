"""Per-endpoint windows: at most so many messages of one endpoint in the broker.

Every worker consumes the same queues, so a message in them is received by a
worker whatever its endpoint's state: when an endpoint stops answering with a
backlog queued, each of its messages would cross the broker and a worker only to
be put off, and the healthy endpoints would pay for it. With
`WEBHOOK_ENDPOINT_WINDOW` set (0, the default, turns this off: BENCHMARKS.md,
"Endpoint windows", says why), each endpoint has a window of that many messages
in the broker; what a publisher adds
beyond it waits in Redis, in order (a sorted set of delivery ids), and moves into
the broker as the endpoint's messages are settled after an attempt, never while
it refuses every delivery.

Two Lua scripts on Redis's clock, one call per endpoint, pipelined:
- `admit` when deliveries are published: the messages that fit the window go
  now (the oldest waiting first), the rest wait;
- `release` when a worker settles messages for good (acknowledged without a
  successor): the window has room again, and if the endpoint just had attempts
  and is not refusing, waiting messages fill it (once a quarter of it is free).

The database rows stay the outbox: a waiting delivery is an open row with a lease
like a queued one, so if Redis forgets the waiting set (a restart, an expiry) the
sweep publishes it when its lease passes. Without Redis, everything is published
at once (fail open). A count that drifts (a message settled outside a worker)
expires after two leases without change.
"""

import logging
from collections import Counter
from collections.abc import Iterable

import redis
from django.conf import settings

from deliveries.flowcontrol import REFUSING_SET
from deliveries.publisher import Message
from webhooks_project.queues import DELIVERIES_QUEUE, RETRIES_QUEUE
from webhooks_project.redis_client import get_redis, run_script

logger = logging.getLogger(__name__)

# A waiting member is the queue's code and the delivery id.
_CODES = {DELIVERIES_QUEUE: "d", RETRIES_QUEUE: "r"}
_QUEUES = {code: queue for queue, code in _CODES.items()}
# What waits moves into the broker once a window has this part of it free, in
# one publish: a quorum queue confirms a few large batches for far less than
# many small ones.
REFILL_PARTS = 4
# How long a waiting set outlives its last change (seconds); its rows' leases
# bring them back long before.
WAITING_TTL = 24 * 3600

# KEYS: 1 count, 2 waiting set. ARGV: window, most waiting, count ttl, waiting
# ttl, then the members to publish. Returns the members to publish now.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local waiting = redis.call('ZCARD', KEYS[2])
local out = {}
local i = 5
if waiting >= tonumber(ARGV[2]) then
  -- Too many waiting already: publish rather than keep more in Redis.
  for j = i, #ARGV do out[#out + 1] = ARGV[j] end
  i = #ARGV + 1
elseif waiting == 0 then
  while i <= #ARGV and n + #out < window do
    out[#out + 1] = ARGV[i]
    i = i + 1
  end
end
if i <= #ARGV then
  local args = {}
  for j = i, #ARGV do
    args[#args + 1] = now + (j - i)
    args[#args + 1] = ARGV[j]
    if #args >= 1000 or j == #ARGV then
      redis.call('ZADD', KEYS[2], 'NX', unpack(args))
      args = {}
    end
  end
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  local room = window - n - #out
  if room > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[2], room)
    for k = 1, #popped, 2 do out[#out + 1] = popped[k] end
  end
end
if #out > 0 then
  redis.call('SET', KEYS[1], n + #out, 'EX', ARGV[3])
end
return out
"""

# KEYS: 1 count, 2 waiting set, 3 refusing zset. ARGV: window, count ttl,
# messages settled, refill (1/0), endpoint id, least refill. Returns the members
# to publish.
_RELEASE = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0') - tonumber(ARGV[3])
if n < 0 then n = 0 end
local out = {}
if ARGV[4] == '1' then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local refusing = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[5]) or '0')
  local room = tonumber(ARGV[1]) - n
  local least = math.min(tonumber(ARGV[6]), redis.call('ZCARD', KEYS[2]))
  if refusing <= now_ms and room > 0 and room >= least then
    local popped = redis.call('ZPOPMIN', KEYS[2], room)
    for k = 1, #popped, 2 do out[#out + 1] = popped[k] end
    n = n + #out
  end
end
if n > 0 then
  redis.call('SET', KEYS[1], n, 'EX', ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return out
"""


def _keys(endpoint_id) -> tuple[str, str]:
    return f"fc:win:{endpoint_id}", f"fc:win:{endpoint_id}:waiting"


def _count_ttl() -> int:
    return 2 * settings.WEBHOOK_QUEUE_LEASE_SECONDS


def _text(member) -> str:
    return member.decode() if isinstance(member, bytes) else member


def _message(endpoint_id: str, member) -> tuple[str, Message]:
    member = _text(member)
    return _QUEUES[member[0]], Message(member[1:], endpoint_id)


def admit(messages: Iterable[Message], *, queue: str) -> list[tuple[str, Message]]:
    """Of new messages for `queue`, those to publish now, with their queues.

    The others wait for room in their endpoint's window; the oldest waiting go
    first, so messages that waited may come back instead of these. Countdowns and
    messages without an endpoint are not windowed.
    """
    now: list[tuple[str, Message]] = []
    windowed: list[Message] = []
    by_endpoint: dict[str, list[Message]] = {}
    window = settings.WEBHOOK_ENDPOINT_WINDOW
    for message in messages:
        if window and message.endpoint_id and not message.countdown:
            by_endpoint.setdefault(str(message.endpoint_id), []).append(message)
            windowed.append(message)
        else:
            now.append((queue, message))
    if not by_endpoint:
        return now
    head = [window, settings.WEBHOOK_ENDPOINT_WINDOW_WAITING_MAX, _count_ttl()]
    head.append(WAITING_TTL)
    code = _CODES[queue]
    calls = [
        (_keys(endpoint_id), head + [f"{code}{m.delivery_id}" for m in batch])
        for endpoint_id, batch in by_endpoint.items()
    ]
    try:
        answers = run_script(_ADMIT, calls)
    except redis.RedisError as exc:
        logger.warning("endpoint windows skipped, Redis unavailable: %s", exc)
        return now + [(queue, m) for batch in by_endpoint.values() for m in batch]
    # The messages that go now keep the order they came in (a fan-out's
    # endpoints interleaved): a run of one endpoint's messages would fill the
    # workers' prefetch with deliveries that wait for its in-flight cap. Older
    # ones that waited go first, their endpoints in turn.
    going: list[tuple[str, str]] = []
    for endpoint_id, members in zip(by_endpoint, answers, strict=True):
        going += [(endpoint_id, _text(member)) for member in members]
    popped = set(going)
    fresh = []
    for message in windowed:
        key = (str(message.endpoint_id), f"{code}{message.delivery_id}")
        if key in popped:
            popped.discard(key)  # once, even if a batch repeats a delivery
            fresh.append((queue, message))
    older = [_message(e, member) for e, member in going if (e, member) in popped]
    return now + interleaved(older) + fresh


def interleaved(messages: list[tuple[str, Message]]) -> list[tuple[str, Message]]:
    """The messages with their endpoints taken in turn, each in its own order."""
    by_endpoint: dict[object, list[tuple[str, Message]]] = {}
    for item in messages:
        by_endpoint.setdefault(item[1].endpoint_id, []).append(item)
    lanes = list(by_endpoint.values())
    return [
        lane[index]
        for index in range(max(map(len, lanes), default=0))
        for lane in lanes
        if index < len(lane)
    ]


def release(settled: Counter, *, refill: Iterable = ()) -> list[tuple[str, Message]]:
    """Count `settled[endpoint]` messages out of the broker; those to publish now.

    `refill`: endpoints whose deliveries were just attempted, so that the ones
    waiting move into the room (unless the endpoint refuses everything now).
    Each endpoint's come in order; publishers of several take them in turn
    (`interleaved`).
    """
    window = settings.WEBHOOK_ENDPOINT_WINDOW
    if not window:
        return []
    refill = {str(endpoint_id) for endpoint_id in refill}
    endpoints = {str(e): n for e, n in settled.items() if e is not None}
    for endpoint_id in refill:
        endpoints.setdefault(endpoint_id, 0)
    if not endpoints:
        return []
    calls = [
        (
            (*_keys(endpoint_id), REFUSING_SET),
            [
                window,
                _count_ttl(),
                count,
                int(endpoint_id in refill),
                endpoint_id,
                max(1, window // REFILL_PARTS),
            ],
        )
        for endpoint_id, count in endpoints.items()
    ]
    try:
        answers = run_script(_RELEASE, calls)
    except redis.RedisError as exc:
        logger.warning("endpoint windows not updated, Redis unavailable: %s", exc)
        return []
    return [
        _message(endpoint_id, member)
        for endpoint_id, members in zip(endpoints, answers, strict=True)
        for member in members
    ]


def state(endpoint_id) -> dict:
    """The endpoint's messages in the broker and deliveries waiting (None: unknown)."""
    count_key, waiting_key = _keys(endpoint_id)
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.get(count_key)
        pipe.zcard(waiting_key)
        in_broker, waiting = pipe.execute()
    except redis.RedisError:
        return {"in_broker": None, "waiting": None}
    return {"in_broker": int(in_broker or 0), "waiting": waiting}


def forget(endpoint_id) -> None:
    """Drop the endpoint's window (its waiting rows come back with their leases)."""
    try:
        get_redis().delete(*_keys(endpoint_id))
    except redis.RedisError as exc:
        logger.warning("endpoint window not dropped, Redis unavailable: %s", exc)
