"""Publishing delivery tasks in bulk: one channel, one wait for all the confirms.

`Task.apply_async` waits for RabbitMQ's publisher confirm after every message
(on a quorum queue, until the message is in the queue's log), and spends its own
routing, signal and retry work on each call: an event fanned out to N endpoints
waited N times in a row. Here the messages of a batch go out in one socket write
(deliveries.amqp_frames encodes them) on a channel in confirm mode, then one
wait covers every confirm. The messages are
Celery task messages (protocol 2) with the few headers a worker reads, so any
worker, whatever its pool, runs them as ordinary `deliveries.deliver` tasks.

Each thread keeps its own connection (py-amqp channels are not thread-safe); a
connection that fails is dropped and the batch is tried once more on a new one.
A batch that still fails raises: the caller's rows are the outbox, and the sweep
publishes them again.
"""

import contextlib
import functools
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import redis
from kombu import Connection, Queue
from kombu.common import maybe_declare
from kombu.transport.native_delayed_delivery import calculate_routing_key

from deliveries.amqp_frames import publish_frames
from deliveries.flow import isolation, refusals
from deliveries.flow.isolation import REDECLARE_SECONDS
from webhooks_project.queues import (
    DELIVERIES_QUEUE,
    ENDPOINT_QUEUE_PREFIX,
    TASK_QUEUES,
    endpoint_queue,
)

logger = logging.getLogger(__name__)

TASK_NAME = "deliveries.deliver"
# Where Celery publishes countdowns on quorum queues (native delayed delivery):
# RabbitMQ holds the message and routes it to the queue when it is due.
DELAYED_EXCHANGE = "celery_delayed_27"
# Longest wait for RabbitMQ to confirm a batch, in seconds.
CONFIRM_TIMEOUT = 10.0
_QUEUES = {queue.name: queue for queue in TASK_QUEUES}
# The third part of a protocol 2 body: no callbacks, chain or chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class PublishError(Exception):
    """RabbitMQ did not take (or did not confirm) every message of a batch."""


class _Channel:
    """A connection, a channel in confirm mode and what it has confirmed."""

    def __init__(self, app) -> None:
        conf = app.conf
        self.connection = Connection(
            conf.broker_url,
            connect_timeout=conf.broker_connection_timeout,
            heartbeat=0,
        )
        # With a failover list (`;`-separated broker URLs), each URL once.
        self.connection.ensure_connection(
            max_retries=max(1, len(self.connection.alt) - 1)
        )
        self.channel = self.connection.channel()
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.channel.events["basic_return"].add(self._on_return)
        self.returned: set[str] = set()  # routing keys of messages sent back
        # Queue name: when this channel declared it (monotonic).
        self.declared: dict[str, float] = {}
        self.published = 0  # delivery tags count from 1 on a new channel
        self.confirmed_upto = 0
        self.confirmed: set[int] = set()
        self.nacked = False
        self.pid = os.getpid()

    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.confirmed_upto = max(self.confirmed_upto, tag)
        else:
            self.confirmed.add(tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self.nacked = True
        self._on_ack(tag, multiple)

    def _on_return(self, exc, exchange: str, routing_key: str, message) -> None:
        self.returned.add(routing_key)

    def _all_confirmed(self) -> bool:
        while self.confirmed_upto + 1 in self.confirmed:
            self.confirmed.discard(self.confirmed_upto + 1)
            self.confirmed_upto += 1
        return self.confirmed_upto >= self.published

    def declare(self, queue) -> None:
        """Declare a shared queue, once per channel."""
        if queue.name not in self.declared:
            maybe_declare(queue, self.channel)
            self.declared[queue.name] = time.monotonic()

    def declare_endpoint_queues(self, queues: dict[str, Queue]) -> set[str]:
        """Declare endpoint queues (again after a while) and announce them.

        `queues` maps endpoint ids to their queues. Returns the endpoint ids
        whose queues the workers know of: those this channel announced lately
        and those it announces now; the rest (Redis unreachable) are not.
        """
        now = time.monotonic()
        due = {
            endpoint_id: queue
            for endpoint_id, queue in queues.items()
            if now - self.declared.get(queue.name, -REDECLARE_SECONDS)
            >= REDECLARE_SECONDS
        }
        for queue in due.values():
            # Every time, not kombu's maybe_declare (once per connection): a
            # declaration keeps RabbitMQ from expiring the queue meanwhile.
            queue.bind(self.channel).declare()
        if due:
            try:
                isolation.announce(due)
            except redis.RedisError as exc:
                logger.warning("endpoint queues unannounced, shared queue: %s", exc)
                return set(queues) - set(due)
            for queue in due.values():
                self.declared[queue.name] = now
        return set(queues)

    def publish(self, groups: list[tuple[list, Queue]]) -> None:
        """Publish each group of built messages to its queue; wait for confirms.

        Messages to an endpoint queue are mandatory: one that no longer exists
        (deleted since this channel declared it) sends them back, and the batch
        fails instead of losing them.
        """
        connection = self.connection.connection  # py-amqp's
        frames = []
        for messages, queue in groups:
            mandatory = queue.name.startswith(ENDPOINT_QUEUE_PREFIX)
            for task_id, headers, body, countdown in messages:
                if countdown:
                    exchange = DELAYED_EXCHANGE
                    routing_key = calculate_routing_key(countdown, queue.routing_key)
                else:
                    exchange, routing_key = queue.exchange.name, queue.routing_key
                frames.append(
                    publish_frames(
                        channel=self.channel.channel_id,
                        frame_max=connection.frame_max,
                        exchange=exchange,
                        routing_key=routing_key,
                        mandatory=mandatory,
                        correlation_id=task_id,
                        headers=headers,
                        body=body,
                    )
                )
        # The whole batch in one write; the confirms below in as few reads.
        connection.transport.write(b"".join(frames))
        self.published += len(frames)
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while not self._all_confirmed():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishError("RabbitMQ did not confirm the batch in time")
            self.connection.drain_events(timeout=remaining)
        if self.nacked:
            self.nacked = False
            raise PublishError("RabbitMQ refused (nacked) a message of the batch")
        if self.returned:
            for routing_key in self.returned:  # declared again on the next try
                self.declared.pop(routing_key, None)
            self.returned.clear()
            raise PublishError("a queue of the batch no longer exists")

    def close(self) -> None:
        """Drop the connection without the closing handshake (after a failure).

        A cluster without quorum holds back the reply to a close until quorum
        returns, and the request would wait for it; and closing a connection
        that already failed may fail again.
        """
        with contextlib.suppress(Exception):
            self.connection.collect()


class Message(NamedTuple):
    """One `deliveries.deliver` task to publish.

    `endpoint_id` rides along as a hint: the engine postpones deliveries of an
    endpoint it knows is refusing without claiming them first.
    """

    delivery_id: str
    endpoint_id: str | None = None
    countdown: int = 0  # seconds in RabbitMQ's delayed delivery (0: now)
    retries: int = 0  # the task's retry count


class Publisher:
    """Publishes `deliveries.deliver` messages, in batches."""

    def __init__(self, app) -> None:
        self.app = app
        self.local = threading.local()

    def _message(self, message: Message) -> tuple:
        """(task id, headers, body, countdown) of one task message.

        The headers Celery's worker reads (task protocol 2): `task` and `id`,
        `retries`, `eta` of a countdown, and `argsrepr` for Flower; it defaults
        every other one
        (`Task.apply_async` sends twenty, and py-amqp encodes each field in
        Python, on every message, in the web process and again in the worker).
        """
        task_id = str(uuid.uuid4())
        delivery_id = str(message.delivery_id)
        kwargs = {}
        if message.endpoint_id is not None:
            kwargs["endpoint_id"] = str(message.endpoint_id)
        headers = {
            "lang": "py",
            "task": TASK_NAME,
            "id": task_id,
            "retries": message.retries,
            "argsrepr": f"('{delivery_id}',)",
        }
        if message.countdown:
            # As Celery marks a countdown (RabbitMQ holds it until then).
            due = datetime.now(UTC) + timedelta(seconds=message.countdown)
            headers["eta"] = due.isoformat()
        body = json.dumps([[delivery_id], kwargs, _EMBED]).encode()
        return task_id, headers, body, int(message.countdown)

    def _channel(self) -> _Channel:
        channel = getattr(self.local, "channel", None)
        if channel is None or channel.pid != os.getpid():
            channel = self.local.channel = _Channel(self.app)
        return channel

    def _drop(self) -> None:
        channel = getattr(self.local, "channel", None)
        self.local.channel = None
        if channel is not None and channel.pid == os.getpid():
            channel.close()

    def publish(
        self, messages: Sequence[Message], *, queue: str = DELIVERIES_QUEUE
    ) -> None:
        """Publish the messages to `queue`; return once RabbitMQ confirmed all.

        A countdown over zero goes through RabbitMQ's delayed delivery, as
        `apply_async(countdown=...)` does. Raises PublishError when the broker
        cannot be reached or does not confirm the batch (after one more try on
        a new connection).
        """
        if not messages:
            return
        built = [self._message(message) for message in messages]
        own = _with_own_queues(messages, queue)  # once: it counts them (busy)
        for attempt in (1, 2):
            try:
                channel = self._channel()
                channel.publish(_routed(channel, messages, built, queue, own))
                return
            except Exception as exc:
                # Any failure leaves the channel in an unknown state: start over.
                self._drop()
                if attempt == 2:
                    raise PublishError(str(exc) or type(exc).__name__) from exc
                logger.info("publishing again on a new connection: %r", exc)


def _with_own_queues(messages: Sequence[Message], queue: str) -> frozenset[str]:
    """The endpoints whose fresh deliveries of this batch go to their own queues.

    With endpoint queues on, those of the isolated endpoints, among them the
    busy ones this batch isolates.
    """
    if queue != DELIVERIES_QUEUE or not isolation.enabled():
        return frozenset()
    fresh = Counter(str(m.endpoint_id) for m in messages if _fresh(m))
    isolated = refusals.isolated() | isolation.note_published(fresh)
    return isolated & fresh.keys()


def _routed(
    channel: _Channel, messages, built: list, queue: str, own: frozenset[str]
) -> list:
    """The built messages grouped by the queue each goes to.

    A fresh delivery (no countdown) of an endpoint in `own` goes to its
    endpoint's queue (if announced); everything else to `queue`.
    """
    shared = _QUEUES[queue]
    channel.declare(shared)
    if not own:
        return [(built, shared)]
    rest: list = []
    by_endpoint: dict[str, list] = {}
    for message, item in zip(messages, built, strict=True):
        endpoint_id = str(message.endpoint_id)
        if _fresh(message) and endpoint_id in own:
            by_endpoint.setdefault(endpoint_id, []).append(item)
        else:
            rest.append(item)
    queues = {endpoint_id: _endpoint_queue(endpoint_id) for endpoint_id in by_endpoint}
    known = channel.declare_endpoint_queues(queues)
    groups = []
    for endpoint_id, items in by_endpoint.items():
        if endpoint_id in known:
            groups.append((items, queues[endpoint_id]))
        else:
            rest += items
    if rest:
        groups.append((rest, shared))
    return groups


# Building a kombu Queue costs more than encoding its messages; bound copies
# (`queue.bind`) leave these as they are.
_endpoint_queue = functools.lru_cache(maxsize=4096)(endpoint_queue)


def _fresh(message: Message) -> bool:
    """A first try of a delivery to a known endpoint, not a retry."""
    return message.endpoint_id is not None and not message.countdown


_publisher: Publisher | None = None
_lock = threading.Lock()


def publisher() -> Publisher:
    """This process's publisher."""
    global _publisher
    if _publisher is None:
        from webhooks_project.celery import app

        with _lock:
            if _publisher is None:
                _publisher = Publisher(app)
    return _publisher
