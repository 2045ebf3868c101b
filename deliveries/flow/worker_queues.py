"""The endpoint queues one worker process reads, and those it paused.

Publishers announce the endpoint queues they declare (deliveries.flow.isolation);
each worker reads the announcements every TICK_SECONDS on the consumer's event
loop and consumes the queues it did not know. The delivery engine asks it to
pause an endpoint's queue while the endpoint refuses deliveries or has no room
(at most REFUSING_SECONDS at a time), and to resume it when a probe succeeds. A
worker stops consuming a queue announced by nobody for IDLE_SECONDS.
"""

import logging
import threading
import time

import redis
from celery import bootsteps

from deliveries.flow.isolation import (
    ANNOUNCED_KEEP,
    announced_since,
    enabled,
    forget_before,
)
from webhooks_project.queues import endpoint_queue, endpoint_queue_name

logger = logging.getLogger(__name__)

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
