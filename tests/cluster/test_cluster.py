"""The project's quorum queues on a three-node RabbitMQ cluster that loses nodes.

A cluster of its own (tests/cluster/rabbit_cluster.py: rabbit-c1..c3@localhost
on 5681-5683, never the machine's RabbitMQ on 5672) carries the delivery queue
declared as the project declares it (webhooks_project.queues: durable, topic
exchange, x-queue-type quorum). Two publishers run through a failover URL list
(CELERY_BROKER_URL's form, URLs joined by ';'), the queue's leader first:

- "k": kombu's Producer, one confirmed persistent message at a time with the
  project's CELERY_TASK_PUBLISH_RETRY_POLICY, as Celery's apply_async (beat)
  publishes;
- "p": the project's own deliveries.publisher.Publisher, confirmed batches,
  as the web and the workers publish.

While they publish, the queue's leader is SIGKILLed, restarted, then the next
leader is stopped gracefully and started again. Every confirmed message must be
in the queue afterwards (0 lost); duplicates (a batch sent again on a new
connection after its confirms were cut off) are counted, as is the longest gap
between confirms around each fault. A second test takes the cluster below
quorum (two nodes of three stopped) and shows what a confirmed publish does
then, and that everything flows again once the nodes are back.

Figures are printed (pytest -s) and, with CLUSTER_FIGURES=path, written as JSON.
CLUSTER_MESSAGES (default 200) sets N, the messages per publisher between faults.
"""

import contextlib
import itertools
import json
import os
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from django.conf import settings as django_settings
from kombu import Connection

from deliveries import publisher as publisher_module
from deliveries.publisher import Message, Publisher, PublishError
from tests.cluster import rabbit_cluster
from tests.cluster.rabbit_cluster import RabbitCluster
from webhooks_project.queues import DELIVERIES_QUEUE, RETRIES_QUEUE, TASK_QUEUES

MISSING = rabbit_cluster.missing_reason()
pytestmark = pytest.mark.skipif(
    MISSING is not None, reason=f"no RabbitMQ cluster here: {MISSING}"
)

N = int(os.environ.get("CLUSTER_MESSAGES", "200"))
QUEUES = {queue.name: queue for queue in TASK_QUEUES}
FIGURES: dict = {}


@pytest.fixture(scope="module")
def cluster():
    cluster = RabbitCluster()
    try:
        FIGURES["rabbitmq"] = rabbit_cluster.version()
        FIGURES["cluster_start_s"] = round(cluster.start(), 1)
        yield cluster
    finally:
        cluster.teardown()
        _report()


def _report() -> None:
    text = json.dumps(FIGURES, indent=2, default=str)
    print(f"\ncluster figures:\n{text}")
    path = os.environ.get("CLUSTER_FIGURES")
    if path:
        with open(path, "w") as out:
            out.write(text + "\n")


@pytest.fixture
def no_endpoint_queues(settings):
    """One shared delivery queue: the fault is the broker's, not an endpoint's."""
    settings.WEBHOOK_ENDPOINT_QUEUES = False


def _declare(url: str, queue_name: str) -> None:
    """Declare the queue as the project does (exchange, binding, quorum)."""
    with Connection(url, connect_timeout=5) as conn:
        QUEUES[queue_name].bind(conn.default_channel).declare()


def _app(broker_url: str) -> SimpleNamespace:
    """What deliveries.publisher reads of the Celery app."""
    conf = SimpleNamespace(broker_url=broker_url, broker_connection_timeout=2.0)
    return SimpleNamespace(conf=conf)


def _message_id(body: bytes) -> str:
    data = json.loads(body)
    if isinstance(data, dict):  # the kombu publisher's {"id": ...}
        return data["id"]
    return data[0][0]  # Celery protocol 2: [[delivery_id], kwargs, embed]


def _drain(url: str, queue_name: str, idle: float = 2.0) -> Counter:
    """Consume everything in the queue; message id -> times it was there."""
    seen: Counter = Counter()
    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        channel.basic_consume(
            queue_name,
            no_ack=True,
            callback=lambda m: seen.update([_message_id(m.body)]),
        )
        while True:
            try:
                conn.drain_events(timeout=idle)
            except TimeoutError:
                break
        # An ack-less consumer took it all: the queue must be empty now.
        _, left, _ = channel.queue_declare(queue_name, passive=True)
        assert left == 0, f"{left} messages left in {queue_name}"
    return seen


class Stream(threading.Thread):
    """Publishes batches of ids until stopped; remembers what was confirmed."""

    def __init__(self, name: str, send, *, batch: int, pause: float) -> None:
        super().__init__(name=f"stream-{name}", daemon=True)
        self.prefix = name
        self.send = send
        self.batch = batch
        self.pause = pause
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.confirmed: list[str] = []
        self.failed: list[str] = []  # not confirmed: left to the sweep
        self.confirm_times: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        seq = 0
        while not self.halt.is_set():
            ids = [f"{self.prefix}-{seq + i}" for i in range(self.batch)]
            seq += self.batch
            try:
                self.send(ids)
            except Exception as exc:
                cause = f" from {exc.__cause__!r}" if exc.__cause__ else ""
                with self.lock:
                    self.failed += ids
                    self.errors.append(f"{time.monotonic():.1f} {exc!r}{cause}"[:300])
                time.sleep(0.2)
                continue
            with self.lock:
                self.confirmed += ids
                self.confirm_times.append(time.monotonic())
            time.sleep(self.pause)

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.confirmed)

    def gap_around(self, start: float, end: float) -> float:
        """The longest time without a confirm between start and end."""
        with self.lock:
            times = [t for t in self.confirm_times if start <= t <= end]
            before = [t for t in self.confirm_times if t < start]
        points = [before[-1] if before else start, *times]
        if not times:
            return end - points[0]
        return max(b - a for a, b in itertools.pairwise(points))


def _await_counts(streams, targets: dict, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while any(s.count < targets[s.prefix] for s in streams):
        if time.monotonic() > deadline:
            counts = {
                s.prefix: (s.count, targets[s.prefix], s.errors[-3:]) for s in streams
            }
            raise AssertionError(f"publishing stalled: {counts}")
        for s in streams:
            assert s.is_alive(), f"{s.name} died"
        time.sleep(0.05)


def _plus(streams, n: int) -> dict:
    return {s.prefix: s.count + n for s in streams}


def _kombu_sender(broker_url: str, queue_name: str):
    """Celery's way: one confirmed message per publish, retried over the list."""
    queue = QUEUES[queue_name]
    conn = Connection(
        broker_url,
        connect_timeout=2,
        transport_options={"confirm_publish": True},
    )
    producer = conn.Producer(serializer="json")
    policy = django_settings.CELERY_TASK_PUBLISH_RETRY_POLICY

    def send(ids: list[str]) -> None:
        for message_id in ids:
            producer.publish(
                {"id": message_id},
                exchange=queue.exchange,
                routing_key=queue.routing_key,
                delivery_mode=2,
                declare=[queue],
                retry=True,
                retry_policy=policy,
                confirm_timeout=10,
            )

    return send, conn


def _publisher_sender(broker_url: str, queue_name: str):
    """The project's Publisher (one connection per thread, batch confirms)."""
    publisher = Publisher(_app(broker_url))

    def send(ids: list[str]) -> None:
        publisher.publish([Message(i) for i in ids], queue=queue_name)

    return send


def _poll_new_leader(cluster, queue_name: str, old, timeout: float = 60.0) -> float:
    """Seconds until the queue reports a leader other than `old` (CLI polling)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            leader = cluster.queue_info(queue_name).get("leader")
            if leader and leader != old.name:
                return time.monotonic() - started
        time.sleep(0.3)
    raise AssertionError(f"no new leader for {queue_name} in {timeout:.0f} s")


# In `make scale`, not `make test`: the fault suite's short cluster run
# (test_cluster_faults.py) kills and stops leaders under web, workers and beat.
@pytest.mark.scale
def test_leader_killed_then_another_stopped_loses_nothing(cluster, no_endpoint_queues):
    test_began = time.monotonic()
    queue_name = DELIVERIES_QUEUE
    _declare(cluster.nodes[0].url(), queue_name)
    cluster.await_members(queue_name, 3)
    info = cluster.queue_info(queue_name)
    assert info["type"] == "quorum"
    assert sorted(info["members"]) == sorted(n.name for n in cluster.nodes)
    leader = cluster.node(info["leader"])
    broker_url = cluster.broker_url(first=leader)  # both connect to the leader
    figures = FIGURES["failover"] = {
        "n": N,
        "members": len(info["members"]),
        "killed": leader.name,
    }

    k_send, k_conn = _kombu_sender(broker_url, queue_name)
    streams = [
        Stream("k", k_send, batch=1, pause=0.01),
        Stream("p", _publisher_sender(broker_url, queue_name), batch=20, pause=0.1),
    ]
    for stream in streams:
        stream.start()
    try:
        _await_counts(streams, {"k": N, "p": N})

        # 1. SIGKILL the leader mid-run; the publishers go on through the list.
        t_kill = time.monotonic()
        cluster.kill(leader)
        figures["new_leader_s"] = round(
            _poll_new_leader(cluster, queue_name, leader), 1
        )
        _await_counts(streams, _plus(streams, N))
        t_after_kill = time.monotonic()

        # 2. Bring it back: it rejoins and its member catches up.
        figures["killed_node_back_s"] = round(cluster.restart(leader), 1)
        figures["members_online_again_s"] = round(
            cluster.await_members(queue_name, 3), 1
        )
        _await_counts(streams, _plus(streams, N // 2))

        # 3. Stop the next leader gracefully, publish on, start it again.
        second = cluster.leader(queue_name)
        figures["stopped"] = second.name
        t_stop = time.monotonic()
        figures["graceful_stop_s"] = round(cluster.stop(second), 1)
        _await_counts(streams, _plus(streams, N))
        t_after_stop = time.monotonic()
        figures["stopped_node_back_s"] = round(cluster.restart(second), 1)
        cluster.await_members(queue_name, 3)
        _await_counts(streams, _plus(streams, N // 2))
    finally:
        for stream in streams:
            stream.halt.set()
        for stream in streams:
            stream.join(timeout=30)
        k_conn.release()

    present = _drain(cluster.any_running().url(), queue_name)
    for stream in streams:
        confirmed = set(stream.confirmed)
        lost = confirmed - set(present)
        mine = {i: c for i, c in present.items() if i.startswith(f"{stream.prefix}-")}
        unconfirmed_present = set(mine) - confirmed
        figures[stream.prefix] = {
            "confirmed": len(confirmed),
            "not_confirmed": len(stream.failed),
            "lost": len(lost),
            "duplicates": sum(c - 1 for c in mine.values()),
            "unconfirmed_but_queued": len(unconfirmed_present),
            "gap_at_kill_s": round(stream.gap_around(t_kill, t_after_kill), 2),
            "gap_at_stop_s": round(stream.gap_around(t_stop, t_after_stop), 2),
            "errors": stream.errors[:5],
        }
        assert not lost, f"{stream.prefix}: {len(lost)} confirmed messages lost"
        assert len(confirmed) >= 3 * N
    figures["test_s"] = round(time.monotonic() - test_began, 1)


class Call(threading.Thread):
    """One publish in a thread of its own: it may block for as long as it likes."""

    def __init__(self, name: str, fn) -> None:
        super().__init__(name=f"call-{name}", daemon=True)
        self.fn = fn
        self.started = time.monotonic()
        self.ended: float | None = None
        self.outcome = "still waiting"
        self.published_at: float | None = None  # the publish itself returned

    def run(self) -> None:
        try:
            self.fn(self)
            self.outcome = "confirmed"
        except Exception as exc:
            self.outcome = repr(exc)[:200]
        self.ended = time.monotonic()

    def summary(self, since: float) -> dict:
        return {
            "outcome": self.outcome,
            "returned_after_s": None
            if self.ended is None
            else round(self.ended - self.started, 1),
            "returned_after_quorum_back_began_s": None
            if self.ended is None or self.ended < since
            else round(self.ended - since, 1),
        }


def _kombu_call(url: str, queue, message_id: str, confirm_timeout):
    """Publish one persistent message with confirms on a connection of its own."""

    def call(record: Call) -> None:
        conn = Connection(
            url, connect_timeout=2, transport_options={"confirm_publish": True}
        )
        try:
            try:
                conn.Producer(serializer="json").publish(
                    {"id": message_id},
                    exchange=queue.exchange,
                    routing_key=queue.routing_key,
                    delivery_mode=2,
                    confirm_timeout=confirm_timeout,
                )
            except Exception as exc:
                record.publish_outcome = repr(exc)[:200]
                raise
            finally:
                record.published_at = time.monotonic()
        finally:
            conn.release()  # a clean close: Connection.Close, then wait for CloseOk

    return call


def test_no_quorum_publish_is_not_confirmed(cluster, monkeypatch):
    """Two nodes of three down: a confirmed publish waits or fails, never succeeds.

    Each publish runs in a thread of its own, so one that blocks (a confirm
    that never comes, a close that waits for the broker) is observed, not
    waited for; the nodes come back after a fixed window.
    """
    test_began = time.monotonic()
    queue_name = RETRIES_QUEUE
    queue = QUEUES[queue_name]
    _declare(cluster.nodes[0].url(), queue_name)
    cluster.await_members(queue_name, 3)
    survivor = cluster.leader(queue_name)
    others = [n for n in cluster.nodes if n is not survivor]
    figures = FIGURES["no_quorum"] = {"survivor": survivor.name}
    figures["stop_two_s"] = round(sum(cluster.stop(n) for n in others), 1)

    # The project's Publisher waits CONFIRM_TIMEOUT (10 s); 3 s here.
    monkeypatch.setattr(publisher_module, "CONFIRM_TIMEOUT", 3.0)
    survivor_first = cluster.broker_url(first=survivor)

    def project_publisher(record: Call) -> None:
        Publisher(_app(survivor_first)).publish(
            [Message(f"nq-p-{i}") for i in range(10)], queue=queue_name
        )

    calls = {
        # kombu with a confirm timeout, as a careful client would publish.
        "kombu_confirm_timeout_5s": Call(
            "k5", _kombu_call(survivor.url(), queue, "nq-kombu", 5)
        ),
        # As Celery's apply_async (beat) publishes: no confirm timeout at all.
        "celery_style_no_confirm_timeout": Call(
            "celery", _kombu_call(survivor.url(), queue, "nq-celery", None)
        ),
        "project_publisher_3s": Call("publisher", project_publisher),
    }
    for call in calls.values():
        call.start()

    # The Publisher's connect tries each URL of the failover list once: the
    # only live node last in a list of three.
    last = ";".join(n.url() for n in [*others, survivor])
    publisher_module._Channel(_app(last)).close()
    figures["publisher_reaches_third_url"] = True

    began = min(call.started for call in calls.values())
    time.sleep(max(0.0, 15.0 - (time.monotonic() - began)))
    figures["window_without_quorum_s"] = round(time.monotonic() - began, 1)
    for name, call in calls.items():
        assert call.outcome != "confirmed", f"{name}: confirmed without a quorum"
        figures[name] = {"during": call.summary(float("inf"))}
        if call.published_at is not None:
            figures[name]["publish_returned_after_s"] = round(
                call.published_at - call.started, 1
            )
            figures[name]["publish_outcome"] = getattr(call, "publish_outcome", "ok")

    # The project's Publisher fails (the sweep publishes the rows later) within
    # its two confirm waits, instead of waiting out the outage.
    publisher_call = calls["project_publisher_3s"]
    assert "PublishError" in publisher_call.outcome, publisher_call.outcome
    assert publisher_call.ended - publisher_call.started < 10

    # Quorum back: the two nodes start again together.
    t_restart = time.monotonic()
    figures["restart_two_s"] = round(cluster.restart(*others), 1)
    publisher = Publisher(_app(survivor_first))
    deadline = time.monotonic() + 60
    while True:
        try:
            publisher.publish([Message("nq-after")], queue=queue_name)
            break
        except PublishError:
            assert time.monotonic() < deadline, "no confirm 60 s after quorum returned"
            time.sleep(0.5)
    figures["first_confirm_after_restart_began_s"] = round(
        time.monotonic() - t_restart, 1
    )
    for call in calls.values():
        call.join(timeout=max(0.0, t_restart + 40 - time.monotonic()))
    for name, call in calls.items():
        figures[name]["after"] = call.summary(t_restart)
    cluster.await_members(queue_name, 3)
    present = _drain(cluster.any_running().url(), queue_name)
    figures["queued_afterwards"] = dict(sorted(present.items()))
    # Present at least once: a first try that timed out may be there as well.
    assert present["nq-after"] >= 1, "a publish after quorum returned is missing"
    figures["test_s"] = round(time.monotonic() - test_began, 1)
