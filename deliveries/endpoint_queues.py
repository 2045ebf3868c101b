"""Queues of their own for endpoints in trouble and busy ones, unread while needed.

With one shared queue, every message crosses a worker whatever its endpoint's
state: when an endpoint stops answering with a backlog queued, each of its
messages is received and put off, and the healthy endpoints pay for that passage
(BENCHMARKS.md, isolation beside a dying endpoint). With `WEBHOOK_ENDPOINT_QUEUES`
on (the default), an endpoint is *isolated* when a worker finds it refusing
deliveries (stalled, circuit open, receiver's pause) or too full for its
overflow to wait in the lot, for as long as that lasts and ISOLATE_LINGER more,
and when one process publishes WEBHOOK_ENDPOINT_QUEUE_BUSY_RATE fresh
deliveries for it within a second (a busy endpoint that failed would leave the
biggest backlog), for ISOLATE_LINGER. Publishers send an isolated endpoint's
fresh deliveries to a quorum queue of its own
(`webhooks_project.queues.endpoint_queue`), and workers stop consuming that
queue while the endpoint refuses or has no room (`DeliveryEngine`, at most
REFUSING_SECONDS at a time), then read it again. Other endpoints keep the shared
queue, so the number of queues follows the endpoints in trouble and the
delivery rate, not the number of endpoints; retries and postponed deliveries
keep the shared retries queue.

How publishers learn of isolated endpoints: engines and publishers add them to
a Redis sorted set scored by until when (ISOLATED_KEY); each process reads it at
most every ISOLATED_CACHE_SECONDS. How workers learn of the queues: a publisher that
declares an endpoint's queue (again every REDECLARE_SECONDS while it publishes
to it) announces it in a Redis sorted set, scored by time; each worker reads
what was announced since its last look (every TICK_SECONDS, on the consumer's
event loop) and consumes the queues it did not know. A worker stops consuming a
queue announced by nobody for IDLE_SECONDS (one it has consumed that long), and
RabbitMQ deletes it an hour after its last consumer or declaration
(`x-expires`).

Nothing accepted depends on this: the rows are the outbox. A publisher that
cannot read the isolated endpoints or announce a queue publishes to the shared
queue instead; a message in a queue no worker reads (RabbitMQ deleted it; every
worker was down for longer than IDLE_SECONDS, and those starting look back no
further) is published again by the sweep when its row's lease passes. While a
worker keeps a queue paused, it moves on the leases of that endpoint's queued
rows that would pass meanwhile (`deliveries_keep_queued`), so the sweep does not
publish them twice.
"""

import logging
import threading
import time
from collections import Counter

import redis
from celery import bootsteps

from webhooks_project.queues import QUEUE_PREFIX, endpoint_queue, endpoint_queue_name
from webhooks_project.redis_client import get_redis

logger = logging.getLogger(__name__)

# The sorted set of announced endpoint ids, scored by the announcement's time.
ANNOUNCED_KEY = f"{QUEUE_PREFIX}webhooks:endpoint-queues"
# A publisher declares and announces an endpoint's queue again after this long.
REDECLARE_SECONDS = 30.0
# How often a worker applies pauses and resumptions and looks for new
# announcements (one Redis call; on the consumer's event loop). The first
# delivery to an endpoint new or idle for IDLE_SECONDS waits for that look: a
# second showed in the latency benchmark's p99.
TICK_SECONDS = 0.05
# Each look reaches this far back before the last one; once a second, a look
# reaches READ_OVERLAP back (clocks of several hosts, writes that land late),
# rather than reading every queue announced in that span 20 times a second.
READ_LOOKBACK = 1.0
READ_OVERLAP = 30.0
# A worker stops consuming a queue nobody announced for this long; one starting
# reads the announcements of this long back. (A message left in a queue idle
# for longer, every worker down meanwhile, comes back through the sweep.)
IDLE_SECONDS = 600.0
STARTUP_LOOKBACK = IDLE_SECONDS
# Announcements are kept as long as the queues may exist (their x-expires).
ANNOUNCED_KEEP = 3600.0
# The sorted set of isolated endpoint ids, scored by until when (epoch seconds).
ISOLATED_KEY = f"{QUEUE_PREFIX}webhooks:endpoint-queues:isolated"
# An endpoint stays isolated this long after the end of the pause that isolated
# it: a refusing endpoint's queue is paused again on each reading, and between
# two of them its fresh deliveries should not go back to the shared queue.
ISOLATE_LINGER = 60.0
# How long a process trusts its last reading of the isolated endpoints.
ISOLATED_CACHE_SECONDS = 0.5


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
        _isolated.clear()


def release(endpoint_ids) -> None:
    """Send these endpoints' fresh deliveries to the shared queue again."""
    _remove(ISOLATED_KEY, endpoint_ids)
    _isolated.clear()


def note_published(counts: Counter) -> frozenset[str]:
    """Count fresh deliveries published per endpoint; isolate the busy ones.

    An endpoint for which this process publishes WEBHOOK_ENDPOINT_QUEUE_BUSY_RATE
    fresh deliveries within a second is isolated for ISOLATE_LINGER: were it to
    fail, the backlog it would leave in the shared queue grows with its rate.
    Returns the endpoints isolated so (none if Redis is away).
    """
    from django.conf import settings

    rate = settings.WEBHOOK_ENDPOINT_QUEUE_BUSY_RATE
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


def isolated(*, fresh: bool = False) -> frozenset[str]:
    """The isolated endpoints, as read lately (none when Redis cannot say).

    `fresh`: as Redis has them now, not as this process read them lately.
    """
    if fresh:
        _isolated.clear()
    return _isolated.get()


class _Isolated:
    """This process's last reading of the isolated endpoints."""

    def __init__(self) -> None:
        self.read_at: float | None = None  # monotonic
        self.ids: frozenset[str] = frozenset()
        self.failing = False
        self.next_trim = 0.0  # monotonic

    def clear(self) -> None:
        self.read_at = None

    def get(self) -> frozenset[str]:
        now = time.monotonic()
        if self.read_at is not None and now - self.read_at < ISOLATED_CACHE_SECONDS:
            return self.ids
        wall = time.time()
        try:
            client = get_redis()
            members = client.zrangebyscore(ISOLATED_KEY, wall, "+inf")
            if now >= self.next_trim:  # those whose time passed
                self.next_trim = now + 60
                client.zremrangebyscore(ISOLATED_KEY, "-inf", f"({wall}")
        except redis.RedisError as exc:
            if not self.failing:
                logger.warning("isolated endpoints unreadable, shared queue: %s", exc)
            self.failing, members = True, []
        else:
            self.failing = False
        self.ids = frozenset(m.decode() for m in members)
        self.read_at = now
        return self.ids


_isolated = _Isolated()


class EndpointQueues:
    """The endpoint queues one worker process consumes, and those it paused.

    `pause` is called from the delivery engine's threads; everything else runs
    on the consumer's event loop (`tick`), the only thread that may touch the
    consumer's channel.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # In order: (endpoint id, paused until (monotonic); 0.0 to resume).
        self._requests: list[tuple[str, float]] = []
        # Every queue this worker follows: when it was last announced or taken
        # up (epoch seconds). The paused ones, until when (monotonic): also
        # those of endpoints whose queue this worker does not follow yet.
        self.known: dict[str, float] = {}
        self.paused: dict[str, float] = {}
        self._last_read: float | None = None  # epoch seconds of the last look
        self._next_wide_read = 0.0  # epoch seconds
        self._next_forget = 0.0
        self.reconnected = False

    def pause(self, endpoint_id: str, until: float) -> None:
        """Stop consuming the endpoint's queue until `until` (monotonic)."""
        with self._lock:
            self._requests.append((endpoint_id, until))

    def resume(self, endpoint_id: str) -> None:
        """Read the endpoint's queue again now (its probe succeeded)."""
        with self._lock:
            self._requests.append((endpoint_id, 0.0))

    def tick(self, consumer) -> None:
        """Apply pauses, resume what is due, take up announced queues."""
        if self.reconnected:
            self.reconnected = False
            self._consume_again(consumer)
        now = time.monotonic()
        with self._lock:
            requests, self._requests = self._requests, []
        for endpoint_id, until in requests:
            if not until:
                if endpoint_id in self.paused:
                    self.paused[endpoint_id] = 0.0  # resumed below
                continue
            # A queue not followed yet (the endpoint has just been isolated)
            # is taken up paused when it is announced.
            if endpoint_id not in self.paused and endpoint_id in self.known:
                consumer.cancel_task_queue(endpoint_queue_name(endpoint_id))
                logger.info("endpoint %s refusing or full: queue paused", endpoint_id)
            self.paused[endpoint_id] = max(until, self.paused.get(endpoint_id, 0.0))
        for endpoint_id, until in list(self.paused.items()):
            if until <= now:
                del self.paused[endpoint_id]
                if endpoint_id in self.known:
                    self.known[endpoint_id] = max(self.known[endpoint_id], time.time())
                    _consume(consumer, endpoint_id)
        try:
            self._read(consumer)
        except redis.RedisError as exc:
            logger.warning("endpoint queues: announcements unreadable: %s", exc)

    def _consume_again(self, consumer) -> None:
        """After a reconnection: the consumers Celery made, with our prefetch.

        Celery consumes every selected queue again on a new connection, each
        with its own prefetch; the endpoint queues get theirs back.
        """
        from django.conf import settings

        if not settings.WEBHOOK_ENDPOINT_QUEUE_PREFETCH:
            return
        for endpoint_id in self.known:
            if endpoint_id not in self.paused:
                consumer.cancel_task_queue(endpoint_queue_name(endpoint_id))
                _consume(consumer, endpoint_id)

    def _read(self, consumer) -> None:
        wall = time.time()
        if self._last_read is None:
            since = wall - STARTUP_LOOKBACK
        elif wall >= self._next_wide_read:
            self._next_wide_read = wall + 1.0
            since = self._last_read - READ_OVERLAP
        else:
            since = self._last_read - READ_LOOKBACK
        announced = announced_since(since)
        self._last_read = wall
        for endpoint_id, when in announced.items():
            if endpoint_id not in self.known:
                self.known[endpoint_id] = wall  # idle from now on, at the earliest
                if endpoint_id not in self.paused:
                    _consume(consumer, endpoint_id)
            else:
                self.known[endpoint_id] = max(self.known[endpoint_id], when)
        for endpoint_id, when in list(self.known.items()):
            if when < wall - IDLE_SECONDS and endpoint_id not in self.paused:
                del self.known[endpoint_id]
                name = endpoint_queue_name(endpoint_id)
                consumer.cancel_task_queue(name)
                consumer.app.amqp.queues.pop(name, None)
        if wall >= self._next_forget:
            self._next_forget = wall + 60
            forget_before(wall - ANNOUNCED_KEEP)


def _consume(consumer, endpoint_id: str) -> None:
    """Consume an endpoint's queue, with its own prefetch when one is set.

    Quorum queues have per-consumer QoS: `basic.qos` (global=false) applies to
    the consumers created after it on the channel, so the endpoint queue's
    prefetch is set just before its consumer and Celery's is put back after.
    """
    from django.conf import settings

    queue = endpoint_queue(endpoint_id)
    consumer.app.amqp.queues.add(queue)
    prefetch = settings.WEBHOOK_ENDPOINT_QUEUE_PREFETCH
    if not prefetch or consumer.qos_global or consumer.qos is None:
        consumer.add_task_queue(queue.name)
        return
    channel = consumer.task_consumer.channel
    channel.basic_qos(0, prefetch, False)
    try:
        consumer.add_task_queue(queue.name)
    finally:
        channel.basic_qos(0, consumer.qos.value, False)


_queues = EndpointQueues()


def queues() -> EndpointQueues:
    """This worker process's endpoint queues."""
    return _queues


class EndpointQueuesStep(bootsteps.StartStopStep):
    """Consumer bootstep: follow the endpoint queues while connected.

    Started after the task consumer on every (re)connection: the consumer's
    timers are cleared when its connection is lost, and the queues it consumes
    are declared again with it.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent, **kwargs) -> None:
        super().__init__(parent, **kwargs)
        self.timer = None

    def start(self, c) -> None:
        if not enabled() or c.timer is None:
            return
        # First after the event loop started: a queue consumed before then
        # would deliver to a consumer without its message callback yet.
        self.timer = c.timer.call_repeatedly(TICK_SECONDS, _tick, (c,))
        _queues.reconnected = True

    def stop(self, c) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def shutdown(self, c) -> None:
        self.stop(c)


def _tick(consumer) -> None:
    try:
        _queues.tick(consumer)
    except Exception:  # a bug must not stop the timer (Celery logs and goes on)
        logger.exception("endpoint queues: tick failed")
