"""The benchmark scenarios: each run returns {metric: value} for one repetition.

Ingest: wrk against gunicorn (events vs the trivial view). Delivery: a backlog in
the queue, drained by the workers (deliveries vs no-op tasks). Latency: events
paced through the API at half the end-to-end maximum (events posted while the
workers deliver them, every stage on the same cores). Slow: 200 ms receivers under
several pool sizes. Isolation: healthy endpoints beside one that never answers.
Growth and resources: see bench/growth.py and `resources` below.
"""

import time
from dataclasses import dataclass, field
from typing import NamedTuple

from bench import harness as h
from bench import load
from bench.backlog import backlog
from bench.dead_endpoint import answered_before, open_dead_circuit
from bench.stack import Web, Workers, bench_env

FAN_OUT = 3  # endpoints per event in the ingest, delivery and latency scenarios
HANG_SECONDS = 60  # longer than the response deadline: the worker gives up first
# A web worker with less than this share of the busiest one's CPU sat idle.
IDLE_WORKER_SHARE = 0.25
# Measurements taken before one with both web workers busy is given up on: the
# race took 3 of 4 in a row once (growth, 2026-12-02 afternoon).
IDLE_TRIES = 3


@dataclass
class Context:
    """The options and what earlier scenarios of this invocation measured."""

    args: object
    metrics_dir: str
    database: str = h.BENCH_DB
    keep_tenant: object = None
    medians: dict = field(default_factory=dict)
    # Settings of the processes started for the current database.
    extra_env: dict = field(default_factory=dict)

    def env(self, **extra) -> dict:
        """Environment of web and worker processes for the current database."""
        return bench_env(
            h.database_url(self.database), self.metrics_dir, {**self.extra_env, **extra}
        )

    def web(self) -> Web:
        """gunicorn as the Procfile runs it (--web-threads varies its threads)."""
        return Web(env=self.env(), threads=self.args.web_threads)

    def workers(self, *, processes=None, concurrency=None) -> Workers:
        """The standard worker configuration (or a variant of it)."""
        return Workers(
            env=self.env(),
            processes=processes or self.args.processes,
            pool=self.args.pool,
            concurrency=concurrency or self.args.concurrency,
        )

    def drain_events(self) -> int:
        """Events (fan-out FAN_OUT) whose drain lasts about --seconds at the
        --delivery-rate-guess."""
        return int(self.args.seconds * self.args.delivery_rate_guess / FAN_OUT)

    def reset(self) -> None:
        """Empty queues, Redis and the bench rows of the current database."""
        h.reset_state(keep_tenant=self.keep_tenant)


def wait_workers_ready(workers: Workers, timeout: float = 60) -> None:
    """Publish one no-op task and wait until a worker ran it."""
    from bench.tasks import COUNTER_KEY
    from webhooks_project.redis_client import get_redis

    redis = get_redis()
    before = int(redis.get(COUNTER_KEY) or 0)
    h.noop_backlog(1, threads=1)
    deadline = time.monotonic() + timeout
    while int(redis.get(COUNTER_KEY) or 0) <= before:
        workers.check()
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not run a task within 60 s")
        time.sleep(0.05)


def events_wrk(ctx: Context, web, world, event_type: str = "bench.event") -> dict:
    """`load.wrk` arguments posting `event_type` events with `world`'s key."""
    return {
        "url": web.url,
        "key": world.key,
        "event_type": event_type,
        "path": "/api/v1/events",
        "seconds": ctx.args.seconds,
        "threads": ctx.args.wrk_threads,
        "connections": ctx.args.wrk_connections,
    }


def ingest(ctx: Context) -> dict:
    """Events accepted/s through POST /api/v1/events vs the trivial view."""
    args = ctx.args
    ctx.reset()
    world = h.World()
    world.add_receivers(FAN_OUT, event_type="bench.event")
    world.stop()  # no worker runs: the deliveries only wait in the queue
    with ctx.web() as web:
        common = {
            "url": web.url,
            "key": world.key,
            "event_type": "bench.event",
            "threads": args.wrk_threads,
            "connections": args.wrk_connections,
        }
        load.wrk(path="/bench/noop", seconds=2, **common)  # warm-up
        ceiling = balanced_wrk(web, path="/bench/noop", seconds=args.seconds, **common)
        events = balanced_wrk(
            web, path="/api/v1/events", seconds=args.seconds, **common
        )
        web.check()
    if events["good"] < events["requests"]:
        print(f"    ! {events['requests'] - events['good']} non-2xx answers to events")
    return {"ingest_events_per_s": events["rate"], "web_ceiling_per_s": ceiling["rate"]}


def balanced_wrk(web: Web, **wrk_args) -> dict:
    """`load.wrk`, measured again (up to IDLE_TRIES in all) while a worker idled.

    wrk opens its keep-alive connections at once, and which worker accepts each is
    a race: now and then one worker takes all of them and serves the whole run on
    one core while the other waits (the trivial view then measured about 760
    instead of 1,550 requests/s). That is the accept race, not the web stack.
    """

    def measure() -> tuple[dict, str | None]:
        before = web.worker_cpu()
        result = load.wrk(**wrk_args)
        return result, _idle_worker(web, before)

    return _again_if_idle(wrk_args["path"], measure)


def _again_if_idle(what: str, measure):
    """`measure()` (a result and `_idle_worker`'s verdict), again while idle."""
    for attempt in range(1, IDLE_TRIES + 1):
        result, idle = measure()
        if idle is None:
            break
        then = "measuring again" if attempt < IDLE_TRIES else "kept as measured"
        print(f"    ! {what}: the web workers used {idle} s of CPU; {then}", flush=True)
    return result


def _idle_worker(web: Web, before: dict[int, float]) -> str | None:
    """The web workers' CPU seconds since `before`, if one of them sat nearly idle."""
    after = web.worker_cpu()
    spent = [after[pid] - before[pid] for pid in after if pid in before]
    if len(spent) < 2 or min(spent) >= IDLE_WORKER_SHARE * max(spent):
        return None
    return ", ".join(f"{value:.1f}" for value in spent)


def _noop_rate(ctx: Context, count: int) -> float:
    from bench.tasks import COUNTER_KEY
    from webhooks_project.redis_client import get_redis

    ctx.reset()
    h.noop_backlog(count)
    redis = get_redis()
    marks: dict[str, float] = {}
    low, high = int(count * 0.05), int(count * 0.95)
    with ctx.workers() as workers:
        deadline = time.monotonic() + ctx.args.seconds * 4 + 30
        while time.monotonic() < deadline:
            done = int(redis.get(COUNTER_KEY) or 0)
            now = time.monotonic()
            if done >= low:
                marks.setdefault("low", now)
            if done >= high:
                marks["high"] = now
                break
            workers.check()
            time.sleep(0.02)
    if "high" not in marks:
        return float("nan")
    return (high - low) / (marks["high"] - marks["low"])


class Drained(NamedTuple):
    """A drain's healthy deliveries/s, their arrival times, and the machine's
    busy CPU per healthy delivery (µs) over the same window; its world (the
    receivers' records of each request, their endpoints)."""

    rate: float
    times: list[float]
    cpu_us: float
    world: object = None


def drain(
    ctx: Context,
    *,
    healthy: int,
    dead: bool,
    events: int,
    delay: float = 0.0,
    processes=None,
    concurrency=None,
    known_dead: bool = False,
    max_in_flight: int | None = None,
    keys: int | None = None,
) -> Drained:
    """A backlog of events to `healthy` receivers (and a dead one), drained.

    `known_dead`: the dead endpoint has been dead for a while (its circuit is
    open) when the backlog is written; otherwise it dies just then, with its
    share of the backlog already queued, after answering in 5 ms as far as
    flow control knows (its usual duration). `keys`: the events' ordering keys
    (harness.backlog's).
    """
    ctx.reset()
    world = h.World()
    world.add_receivers(
        healthy, event_type="ok.event", delay=delay, max_in_flight=max_in_flight
    )
    types = ["ok.event"]
    if dead:
        world.add_receivers(1, event_type="dead.event", delay=HANG_SECONDS)
        types.append("dead.event")
        if known_dead:
            open_dead_circuit(ctx, world)
        else:
            answered_before(world)
    backlog(
        tenant=world.tenant, event_types=types, count=events * len(types), keys=keys
    )
    expected = events * healthy
    timeout = ctx.args.seconds * 4 + 30
    try:
        with (
            h.CpuClock() as clock,
            ctx.workers(processes=processes, concurrency=concurrency),
        ):
            times = h.wait_drained(world, "ok.event", expected, timeout=timeout)
            # First: cut the hanging requests so workers stop fast (their
            # queues once they have).
            world.stop(drop_queues=False)
    finally:
        world.stop()
    if len(times) < expected:
        print(f"    ! only {len(times)}/{expected} delivered within {timeout:.0f} s")
    return Drained(h.rate_of(times), times, clock.per_item(times) * 1e6, world)


def delivery(ctx: Context) -> dict:
    """Deliveries/s to fast receivers vs no-op tasks, same worker configuration."""
    seconds = ctx.args.seconds
    noop = _noop_rate(ctx, int(seconds * ctx.args.noop_rate_guess))
    rate = drain(ctx, healthy=FAN_OUT, dead=False, events=ctx.drain_events()).rate
    return {"delivery_per_s": rate, "noop_per_s": noop}


def _paced_latency(ctx: Context, *, rate: float, dead: bool) -> dict:
    """Healthy event-to-delivery latency with events paced through the API."""
    from deliveries.models import Event

    ctx.reset()
    world = h.World()
    world.add_receivers(FAN_OUT, event_type="ok.event")
    types = ["ok.event"]
    if dead:
        world.add_receivers(1, event_type="dead.event", delay=HANG_SECONDS)
        types.append("dead.event")
    seconds = ctx.args.seconds
    try:
        with ctx.web() as web, ctx.workers() as workers:
            wait_workers_ready(workers)
            events_per_s = rate / FAN_OUT * len(types)
            pacer = load.HttpPacer(
                url=web.url,
                key=world.key,
                event_types=types,
                rate=events_per_s,
                seconds=seconds,
            ).run()
            accepted = pacer.statuses.get(202, 0)
            expected = accepted // len(types) * FAN_OUT
            h.wait_drained(world, "ok.event", expected, timeout=15)
            world.stop(drop_queues=False)  # the queues once the workers are gone
    finally:
        world.stop()
    got = world.received("ok.event")
    created = dict(
        Event.objects.filter(tenant=world.tenant, event_type="ok.event").values_list(
            "id", "created_at"
        )
    )
    latencies = []
    for request in got:
        event_id = request.header("webhook-id")
        accepted_at = created.get(_uuid(event_id))
        if accepted_at is not None:
            latencies.append(request.received_at - accepted_at.timestamp())
    if pacer.statuses.keys() - {202}:
        print(f"    ! API answers: {pacer.statuses}")
    if pacer.elapsed > seconds * 1.1:
        lag = f"{seconds:g} s of events took {pacer.elapsed:.0f} s"
        print(f"    ! the web lagged behind the pace: {lag}")
    return {
        "p50_ms": h.percentile(latencies, 50) * 1000,
        "p95_ms": h.percentile(latencies, 95) * 1000,
        "p99_ms": h.percentile(latencies, 99) * 1000,
        "rate_per_s": len(latencies) / max(seconds, pacer.elapsed),
        "delivered_share": len(latencies) / max(1, expected),
    }


def _uuid(value):
    import uuid

    try:
        return uuid.UUID(value)
    except (TypeError, ValueError):
        return None


def end_to_end(ctx: Context) -> float:
    """Deliveries/s through the whole pipeline with every stage on the cores.

    wrk posts events as fast as the web takes them while the workers deliver
    them; the figure is the deliveries received from the first request to the
    last delivery. Ingest and delivery share the two cores, so this is lower
    than either stage's rate alone, and it is the maximum that "half load"
    halves. Measured again while one web worker sat idle (`balanced_wrk`):
    a halved maximum would halve the latency runs' load too.
    """
    return _again_if_idle("end to end", lambda: _end_to_end_once(ctx))


def _end_to_end_once(ctx: Context) -> tuple[float, str | None]:
    args = ctx.args
    ctx.reset()
    world = h.World()
    world.add_receivers(FAN_OUT, event_type="ok.event")
    try:
        with ctx.web() as web, ctx.workers() as workers:
            wait_workers_ready(workers)
            started = time.time()
            before = web.worker_cpu()
            events = load.wrk(
                url=web.url,
                key=world.key,
                event_type="ok.event",
                path="/api/v1/events",
                seconds=args.seconds,
                threads=args.wrk_threads,
                connections=args.wrk_connections,
            )
            idle = _idle_worker(web, before)
            # wrk's requests and the one it posts first to check the answer.
            expected = (events["good"] + 1) * FAN_OUT
            times = h.wait_drained(
                world, "ok.event", expected, timeout=args.seconds * 4 + 30
            )
            web.check()
    finally:
        world.stop()
    if len(times) < expected:
        print(f"    ! only {len(times)}/{expected} delivered")
    rate = len(times) / (times[-1] - started) if times else float("nan")
    return rate, idle


def half_load(ctx: Context) -> float:
    """Half the end-to-end maximum: the latency runs' median, else measured now."""
    maximum = ctx.medians.get("latency_e2e_max_per_s")
    if not maximum or maximum != maximum:  # not measured (or NaN)
        maximum = end_to_end(ctx)
    return maximum / 2


def latency(ctx: Context) -> dict:
    """Event accepted -> delivery received, at half the end-to-end maximum."""
    found = {}
    rate = ctx.args.latency_rate
    if rate is None:
        found["latency_e2e_max_per_s"] = end_to_end(ctx)
        rate = found["latency_e2e_max_per_s"] / 2
    result = _paced_latency(ctx, rate=rate, dead=False)
    return found | {f"latency_{key}": value for key, value in result.items()}


def slow(ctx: Context) -> dict:
    """200 ms receivers: deliveries/s and in-flight requests per pool size."""
    args = ctx.args
    found = {}
    for variant in args.slow_pools.split(","):
        processes, threads = (int(x) for x in variant.lower().split("x"))
        events = int(args.seconds * args.slow_rate_guess / args.slow_endpoints)
        drained = drain(
            ctx,
            healthy=args.slow_endpoints,
            dead=False,
            events=events,
            delay=0.2,
            processes=processes,
            concurrency=threads,
            max_in_flight=args.slow_max_in_flight,
        )
        found[f"slow_{variant}_per_s"] = drained.rate
        found[f"slow_{variant}_in_flight"] = h.in_flight(drained.times, hold=0.2)
    return found


def isolation(ctx: Context) -> dict:
    """Healthy endpoints' throughput and latency beside one that never answers."""
    events = ctx.drain_events()
    # Alone before and after (their mean): a drain's place in the series moved
    # it by up to a fifth on this machine, and the dead-endpoint drains sit between.
    before = drain(ctx, healthy=FAN_OUT, dead=False, events=events)
    beside = drain(ctx, healthy=FAN_OUT, dead=True, events=events)
    known = drain(ctx, healthy=FAN_OUT, dead=True, events=events, known_dead=True)
    after = drain(ctx, healthy=FAN_OUT, dead=False, events=events)
    # The latency scenario's healthy load, the dead endpoint's events on top.
    rate = ctx.args.latency_rate or half_load(ctx)
    paced = _paced_latency(ctx, rate=rate, dead=True)
    return {
        "isolation_alone_per_s": (before.rate + after.rate) / 2,
        "isolation_beside_dead_per_s": beside.rate,
        "isolation_beside_known_dead_per_s": known.rate,
        "isolation_alone_cpu_us": (before.cpu_us + after.cpu_us) / 2,
        "isolation_beside_dead_cpu_us": beside.cpu_us,
        "isolation_beside_known_dead_cpu_us": known.cpu_us,
        "isolation_p50_ms": paced["p50_ms"],
        "isolation_p99_ms": paced["p99_ms"],
        "isolation_paced_per_s": paced["rate_per_s"],
    }
