"""What one RabbitMQ node takes: `python -m bench.broker [--seconds 10] [--runs 3]`.

Task messages go through the delivery queue (a durable quorum queue, declared as
webhooks_project.queues declares it) the way the project sends and takes them:
publisher threads send confirmed batches (--batch, 50; 3 is one event with three
deliveries) with deliveries.publisher.Publisher, as web and workers do, and
consumer threads take them with a prefetch of 128 and acknowledge each one (as
Celery's workers do with late acks). Measured for --seconds, --runs times, on

- `single`: the machine's RabbitMQ node (127.0.0.1:5672), and
- `cluster`: a three-node cluster started for the run (tests/cluster/
  rabbit_cluster.py: its own nodes on 5681-5683; the queue has a member on each,
  its leader takes the publishes and the consumers).

Printed per setup (medians): messages/s through the queue, and each node's CPU
time per message from /proc (the leader's and the followers'), from which the
messages/s one core of a node takes follows. The publishers and consumers run in
this process on the same two cores: the CPU per message, not the rate, is the
figure that carries to other machines. The benchmark's queue prefix (`bench.`).
"""

import argparse
import contextlib
import os
import statistics
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from kombu import Connection

from bench import harness as h
from tests.cluster.rabbit_cluster import RabbitCluster, _beams

MACHINE_URL = "amqp://guest:guest@127.0.0.1:5672//"
BATCH = 50
PREFETCH = 128
PUBLISHERS = 2
CONSUMERS = 2
_TICK = os.sysconf("SC_CLK_TCK")


def _queue():
    """The delivery queue as the project declares it (once Django is set up)."""
    from webhooks_project.queues import DELIVERIES_QUEUE, TASK_QUEUES

    return next(queue for queue in TASK_QUEUES if queue.name == DELIVERIES_QUEUE)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _app(url: str) -> SimpleNamespace:
    """What deliveries.publisher reads of the Celery app."""
    conf = SimpleNamespace(broker_url=url, broker_connection_timeout=2.0)
    return SimpleNamespace(conf=conf)


def _reset(url: str) -> None:
    with Connection(url, connect_timeout=5) as conn:
        bound = _queue().bind(conn.default_channel)
        bound.declare()
        bound.purge()


def _publish(url: str, stop: threading.Event, sent: list[int], size: int) -> None:
    from deliveries.publisher import Message, Publisher

    publisher = Publisher(_app(url))
    batch = [Message(f"bench-{n}") for n in range(size)]
    while not stop.is_set():
        publisher.publish(batch, queue=_queue().name)
        sent.append(size)


def _consume(url: str, stop: threading.Event, taken: list[int]) -> None:
    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        channel.basic_qos(0, PREFETCH, False)

        def on_message(message) -> None:
            channel.basic_ack(message.delivery_tag)
            taken.append(1)

        channel.basic_consume(_queue().name, callback=on_message)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)


def measure(url: str, beams: dict[str, int], seconds: float, batch: int) -> dict:
    """One run: messages/s consumed and CPU ms per message of each node."""
    _reset(url)
    stop = threading.Event()
    sent: list[int] = []
    taken: list[int] = []
    threads = [
        threading.Thread(target=_publish, args=(url, stop, sent, batch), daemon=True)
        for _ in range(PUBLISHERS)
    ] + [
        threading.Thread(target=_consume, args=(url, stop, taken), daemon=True)
        for _ in range(CONSUMERS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(2)  # warm up: connections, the consumers' prefetch filled
    begin_taken, begin_cpu = len(taken), {n: _cpu(p) for n, p in beams.items()}
    began = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - began
    count = len(taken) - begin_taken
    cpu = {n: _cpu(p) - begin_cpu[n] for n, p in beams.items()}
    stop.set()
    for thread in threads:
        thread.join(10)
    return {
        "rate": count / elapsed,
        "cpu_ms": {n: 1000 * c / max(count, 1) for n, c in cpu.items()},
    }


def _machine_beam() -> int:
    """The machine's RabbitMQ VM (not one of tests/cluster's nodes)."""
    for pid, home in _beams().items():
        if "whk-rabbit-cluster-" not in home:
            return pid
    raise RuntimeError("the machine's RabbitMQ does not run")


def report(name: str, runs: list[dict], single_rate: float | None) -> None:
    rate = statistics.median(run["rate"] for run in runs)
    ratio = f" ({rate / single_rate:.2f} of single)" if single_rate else ""
    print(f"| {name} | {rate:,.0f}{ratio} |", end="")
    for node in runs[0]["cpu_ms"]:
        ms = statistics.median(run["cpu_ms"][node] for run in runs)
        print(f" {node} {ms:.3f} ms = {1000 / ms:,.0f} msg/s per core |", end="")
    print(flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.broker")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--batch", type=int, default=BATCH, help="messages per confirmed publish"
    )
    args = parser.parse_args(argv)
    h.setup_django()
    queue = _queue().name
    print("| setup | messages/s | CPU per message, by node |")
    print("| --- | --- | --- |")
    beam = {"node": _machine_beam()}
    single = [
        measure(MACHINE_URL, beam, args.seconds, args.batch) for _ in range(args.runs)
    ]
    _reset(MACHINE_URL)
    report("single", single, None)
    cluster = RabbitCluster()
    try:
        cluster.start()
        url = cluster.nodes[0].url()
        _reset(url)
        cluster.await_members(queue, len(cluster.nodes))
        leader = cluster.leader(queue)
        url = leader.url()  # publishes and consumers on the leader's node
        beams = {
            ("leader" if node is leader else f"follower {node.short}"): node.beam_pid
            for node in cluster.nodes
        }
        runs = [measure(url, beams, args.seconds, args.batch) for _ in range(args.runs)]
        report("cluster", runs, statistics.median(run["rate"] for run in single))
    finally:
        cluster.teardown()


if __name__ == "__main__":
    main()
