"""Queues of their own for endpoints in trouble and busy ones: the publisher's side.

With one shared queue, every message crosses a worker whatever its endpoint's
state: when an endpoint stops answering with a backlog queued, each of its
messages is received and postponed, and the healthy endpoints pay for that passage
(BENCHMARKS.md, isolation beside a dying endpoint). With `WEBHOOK_ENDPOINT_QUEUES`
on (the default), an endpoint is *isolated* when a worker finds it refusing
deliveries (stalled, circuit open, receiver's pause) or too full for its
overflow to wait in the lot, for as long as that lasts and ISOLATE_LINGER more,
and when one process publishes BUSY_RATE fresh
deliveries for it within a second (a busy endpoint that failed would leave the
biggest backlog), for ISOLATE_LINGER. Publishers send an isolated endpoint's
fresh deliveries to a quorum queue of its own
(`webhooks_project.queues.endpoint_queue`), declare it (again every
REDECLARE_SECONDS while they publish to it) and announce it in a Redis sorted
set scored by time; workers read the announcements and consume those queues,
pausing one while its endpoint refuses or has no room
(deliveries.flow.worker_queues). Other endpoints keep the shared queue, so the
number of queues follows the endpoints in trouble and the delivery rate, not the
number of endpoints; retries and postponed deliveries keep the shared retries
queue. RabbitMQ deletes an endpoint's queue an hour after its last consumer or
declaration (`x-expires`).

Isolated endpoints are a Redis sorted set scored by until when
(`refusals.ISOLATED_KEY`); processes read it through deliveries.flow.refusals.

Nothing accepted depends on this: the rows are the outbox. A publisher that
cannot read the isolated endpoints or announce a queue publishes to the shared
queue instead; a message in a queue no worker reads (RabbitMQ deleted it; every
worker was down for longer than a worker's idle time, and those starting look
back no further) is published again by the sweep when its row's lease passes.
While a worker keeps a queue paused, it moves on the leases of that endpoint's
queued rows that would pass meanwhile, so the sweep does not publish them twice.
"""

import logging
import threading
import time
from collections import Counter

import redis

from deliveries.flow import refusals
from deliveries.flow.refusals import ISOLATED_KEY
from webhooks_project.queues import QUEUE_PREFIX, endpoint_queue_name
from webhooks_project.redis_client import get_redis

logger = logging.getLogger(__name__)

# The sorted set of announced endpoint ids, scored by the announcement's time.
ANNOUNCED_KEY = f"{QUEUE_PREFIX}webhooks:endpoint-queues"
# A publisher declares and announces an endpoint's queue again after this long.
REDECLARE_SECONDS = 30.0
# Fresh deliveries one process publishes for one endpoint within a second that
# isolate it (0: never for that): a busy endpoint that fails leaves the biggest
# backlog in the shared queue. Bounds the number of queues by the delivery rate.
BUSY_RATE = 100
# Announcements are kept as long as the queues may exist (their x-expires).
ANNOUNCED_KEEP = 3600.0
# The sorted set of isolated endpoint ids, scored by until when (epoch seconds).
# An endpoint stays isolated this long after the end of the pause that isolated
# it: a refusing endpoint's queue is paused again on each reading, and between
# two of them its fresh deliveries should not go back to the shared queue.
ISOLATE_LINGER = 60.0


def enabled() -> bool:
    """Whether endpoints may have queues of their own."""
    from django.conf import settings

    return settings.WEBHOOK_ENDPOINT_QUEUES


def announce(endpoint_ids) -> None:
    """Tell the workers these endpoints' queues exist (raises redis errors)."""
    now = time.time()
    get_redis().zadd(ANNOUNCED_KEY, {str(e): now for e in endpoint_ids})


def announced_since(since: float) -> dict[str, float]:
    """Endpoint ids announced at or after `since` (epoch seconds), with when."""
    rows = get_redis().zrangebyscore(ANNOUNCED_KEY, since, "+inf", withscores=True)
    return {member.decode(): score for member, score in rows}


def forget_before(until: float) -> None:
    """Drop announcements older than `until`: those queues are gone."""
    get_redis().zremrangebyscore(ANNOUNCED_KEY, "-inf", f"({until}")


def forget(endpoint_ids) -> None:
    """Drop these endpoints' announcements (their queues were deleted)."""
    _remove(ANNOUNCED_KEY, endpoint_ids)


def _remove(key: str, endpoint_ids) -> None:
    members = [str(e) for e in endpoint_ids]
    if members:
        get_redis().zrem(key, *members)


def delete(endpoint_ids=None) -> dict[str, int]:
    """Delete these endpoints' queues (every announced one by default).

    Returns the messages each still held (0 for none). For a stopped stack,
    test runs and benchmarks: RabbitMQ cancels a running worker's consumer of
    a deleted queue, and the worker reconnects.
    """
    from webhooks_project.celery import app

    if endpoint_ids is None:
        endpoint_ids = list(announced_since(0))
    endpoint_ids = [str(e) for e in endpoint_ids]
    if not endpoint_ids:
        return {}
    left = {}
    with app.connection_for_write() as conn:
        channel = conn.channel()
        for endpoint_id in endpoint_ids:
            name = endpoint_queue_name(endpoint_id)
            left[endpoint_id] = channel.queue_delete(name)
    forget(endpoint_ids)
    release(endpoint_ids)
    return left


def isolate(until: dict[str, float]) -> None:
    """Isolate endpoints until when (epoch seconds each; never brought forward).

    Raises redis errors.
    """
    if until:
        get_redis().zadd(ISOLATED_KEY, until, gt=True)
        refusals.forget()  # this process reads it afresh


def release(endpoint_ids) -> None:
    """Send these endpoints' fresh deliveries to the shared queue again."""
    _remove(ISOLATED_KEY, endpoint_ids)
    refusals.note_recovered(endpoint_ids)


def note_published(counts: Counter) -> frozenset[str]:
    """Count fresh deliveries published per endpoint; isolate the busy ones.

    An endpoint for which this process publishes BUSY_RATE
    fresh deliveries within a second is isolated for ISOLATE_LINGER: were it to
    fail, the backlog it would leave in the shared queue grows with its rate.
    Returns the endpoints isolated so (none if Redis is away).
    """

    rate = BUSY_RATE
    busy = _busy.note(counts, rate) if rate else frozenset()
    if busy:
        try:
            isolate(dict.fromkeys(busy, time.time() + ISOLATE_LINGER))
        except redis.RedisError as exc:
            logger.warning("busy endpoints not isolated (Redis): %s", exc)
            return frozenset()
    return busy


class _Busy:
    """Fresh deliveries this process published per endpoint, this second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = 0.0  # monotonic
        self._counts: Counter = Counter()
        self._noted: set[str] = set()  # isolated this second already

    def note(self, counts: Counter, rate: int) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            if now - self._since >= 1.0:
                self._since, self._counts, self._noted = now, Counter(), set()
            self._counts.update(counts)
            busy = {
                e for e in counts if self._counts[e] >= rate and e not in self._noted
            }
            self._noted |= busy
        return frozenset(busy)


_busy = _Busy()
