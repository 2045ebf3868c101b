"""Slow-endpoint isolation benchmark: one dead endpoint must not hurt the others.

    .venv/bin/python bench/isolation.py [--events 1500] [--runs 3] [--concurrency 128]

Scenarios, each run --runs times (medians reported), all on 127.0.0.1:
  healthy      3 fast endpoints; a backlog of events, each to all 3, drained by
               one worker: deliveries/s (the ceiling of this machine here);
  with-dead    the same plus a 4th endpoint that never answers (hangs until the
               response deadline) and receives half of all events: the healthy
               endpoints' deliveries/s, as a ratio of `healthy`;
  latency      events published at a steady rate (half the healthy ceiling), half
               of them to the dead endpoint: healthy event-to-delivery p50/p99;
  slow-200ms   5 endpoints that answer after 200 ms: deliveries/s and the
               in-flight concurrency that implies.
"""

import argparse
import threading
import time

from harness import Pacer, Worker, median, percentile, reset_state, setup_django

HANG_SECONDS = 60  # longer than the response deadline: the worker gives up first


def make_world(*, healthy: int, dead: bool, delay: float = 0.0):
    """A tenant, `healthy` receivers/endpoints (+ a hanging one); returns them."""
    from deliveries.receiver import WebhookReceiver
    from subscriptions.services import endpoint_create
    from tenants.services import tenant_create

    tenant = tenant_create(name=f"bench-{time.monotonic_ns()}", rate_limit=100_000)
    receivers = [WebhookReceiver(delay=delay).start() for _ in range(healthy)]
    for receiver in receivers:
        endpoint_create(tenant=tenant, url=receiver.url, event_types=["ok.event"])
    hanging = None
    if dead:
        hanging = WebhookReceiver(delay=HANG_SECONDS).start()
        endpoint_create(tenant=tenant, url=hanging.url, event_types=["dead.event"])
    return tenant, receivers, hanging


def publish(tenant, count: int, *, dead_share: bool, threads: int = 4) -> None:
    """Ingest `count` ok events (and as many dead ones) through the service."""
    from django.db import connection

    from deliveries.services.ingest import event_ingest

    def work(offset: int) -> None:
        for index in range(offset, count, threads):
            event_ingest(tenant=tenant, event_type="ok.event", payload={"n": index})
            if dead_share:
                event_ingest(
                    tenant=tenant, event_type="dead.event", payload={"n": index}
                )
        connection.close()

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def received(receivers) -> list:
    return [request for receiver in receivers for request in receiver.received]


def drain(receivers, expected: int, timeout: float) -> float:
    """Wait for `expected` healthy deliveries; deliveries/s between first and last."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(received(receivers)) < expected:
        time.sleep(0.1)
    got = received(receivers)
    if len(got) < expected:
        print(f"  ! only {len(got)}/{expected} delivered within {timeout:.0f} s")
    times = sorted(request.received_at for request in got)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def stop(receivers, hanging) -> None:
    for receiver in [*receivers, *([hanging] if hanging else [])]:
        receiver.stop()


def run_drain(args, *, dead: bool, delay: float = 0.0, endpoints: int = 3) -> float:
    reset_state()
    tenant, receivers, hanging = make_world(healthy=endpoints, dead=dead, delay=delay)
    publish(tenant, args.events, dead_share=dead)
    with Worker(concurrency=args.concurrency):
        rate = drain(receivers, args.events * endpoints, timeout=args.timeout)
    stop(receivers, hanging)
    return rate


def run_latency(args, *, rate: float) -> tuple[float, float, int]:
    from deliveries.models import Event
    from deliveries.services.ingest import event_ingest

    reset_state()
    tenant, receivers, hanging = make_world(healthy=3, dead=True)
    seconds = args.latency_seconds
    with Worker(concurrency=args.concurrency):

        def one(index: int) -> None:
            event_type = "ok.event" if index % 2 == 0 else "dead.event"
            event_ingest(tenant=tenant, event_type=event_type, payload={"n": index})

        Pacer(one, rate=rate * 2, seconds=seconds).start().join()
        time.sleep(3)
    created = {
        str(event_id): created_at.timestamp()
        for event_id, created_at in Event.objects.filter(
            event_type="ok.event"
        ).values_list("id", "created_at")
    }
    latencies = [
        request.received_at - created[request.header("webhook-id")]
        for request in received(receivers)
        if request.header("webhook-id") in created
    ]
    stop(receivers, hanging)
    return percentile(latencies, 50), percentile(latencies, 99), len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1500)
    parser.add_argument("--slow-events", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--slow-concurrency", type=int, default=256)
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()
    setup_django()

    healthy, with_dead, slow, p50s, p99s = [], [], [], [], []
    for run in range(1, args.runs + 1):
        healthy.append(run_drain(args, dead=False))
        with_dead.append(run_drain(args, dead=True))
        slow_args = argparse.Namespace(
            **{**vars(args), "events": args.slow_events // 5}
        )
        slow_args.concurrency = args.slow_concurrency
        slow.append(run_drain(slow_args, dead=False, delay=0.2, endpoints=5))
        p50, p99, count = run_latency(args, rate=median(healthy) / 3 / 2)
        p50s.append(p50)
        p99s.append(p99)
        print(
            f"run {run}: healthy {healthy[-1]:.0f}/s, with dead {with_dead[-1]:.0f}/s, "
            f"200 ms receivers {slow[-1]:.0f}/s, latency p50 {p50 * 1000:.0f} ms "
            f"p99 {p99 * 1000:.0f} ms ({count} deliveries)",
            flush=True,
        )
    ceiling = median(healthy)
    print()
    print("| scenario | median | ratio / target |")
    print("| --- | --- | --- |")
    print(f"| healthy endpoints alone (ceiling) | {ceiling:.0f} deliveries/s | 1.00 |")
    print(
        f"| healthy endpoints beside a dead one | {median(with_dead):.0f} deliveries/s "
        f"| {median(with_dead) / ceiling:.2f} (target >= 0.90) |"
    )
    print(
        f"| healthy latency beside a dead one, p50 | {median(p50s) * 1000:.0f} ms | |"
    )
    print(
        f"| healthy latency beside a dead one, p99 | {median(p99s) * 1000:.0f} ms "
        f"| target < 1000 ms |"
    )
    rate = median(slow)
    print(
        f"| 200 ms receivers | {rate:.0f} deliveries/s ({rate * 0.2:.0f} in flight) "
        f"| target >= 500/s |"
    )


if __name__ == "__main__":
    main()
