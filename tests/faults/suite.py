"""The fault-injection suite: publish through real processes while breaking them.

    .venv/bin/python -m tests.faults --short           # part of `make test`
    .venv/bin/python -m tests.faults --deliveries 20000 # the long run (`make faults`)

It starts receivers on 127.0.0.1 (steady, slow and flaky ones, each counting the
`webhook-id`s it accepted), gunicorn, a threads worker (as the Procfile runs it), a
prefork worker (whose pool children get killed) and beat, all against a database,
queue prefix and Redis database of its own. Producers publish at a steady rate with
an `Idempotency-Key`, retrying the same key until the API accepts (as a producer
should); a third of the events belong to keyed streams (an `ordering_key` per
line, a counter per line in the payload), whose receivers' arrivals must come in
order. Meanwhile a fault thread kills workers, cuts database connections and stops
and starts RabbitMQ, Redis and PostgreSQL. Then everything is healed, deliveries
drain, and the invariants are checked; one summary line says how it went.
"""

import argparse
import itertools
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from . import services
from .cluster_mode import CLUSTER_FAULTS, SHORT_CLUSTER_FAULTS, ClusterBroker
from .producers import SLOW_EVERY, Producers
from .receivers import FaultReceiver, wait_idle
from .stack import REPO_ROOT, Beat, Process, Web, Worker

DATABASE = os.environ.get("FAULTS_DATABASE", "webhooks_faults")
ALL_FAULTS = (
    "worker-child-kill",
    "worker-kill",
    "worker-term",
    "pg-terminate",
    "redis-restart",
    "rabbitmq-restart",
    "pg-restart",
)
# Restarting PostgreSQL would also cut the test run's own connection, so the short
# run cuts this suite's connections with pg_terminate_backend instead.
SHORT_FAULTS = ALL_FAULTS[:-1]
SECRET = "whsec_" + "ZmF1bHRzdWl0ZWZhdWx0c3VpdGVmYXVsdHN1aXRlIQ=="


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.faults")
    parser.add_argument("--short", action="store_true", help="the make-test preset")
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument(
        "--rate", type=float, default=15.0, help="events published per second"
    )
    parser.add_argument("--faults", default="all", help="comma-separated, or all")
    parser.add_argument("--fault-interval", type=float, default=10.0)
    parser.add_argument("--broker-down", type=float, default=4.0)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--final-bound", type=float, default=300.0)
    parser.add_argument("--publishers", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lines", type=int, default=16, help="keyed lines a producer")
    parser.add_argument("--cluster", action="store_true", help="3 RabbitMQ nodes")
    args = parser.parse_args(argv)
    if args.short:
        args.lines = 2
        # Two cluster faults: a round fits in 30 s of publishing.
        args.deliveries = min(args.deliveries, 600 if args.cluster else 900)
        args.rate = 5.0
        args.fault_interval = 4.0
        args.broker_down = 3.0
        args.drain_timeout = 150.0
        args.final_bound = 150.0
        if args.faults == "all":
            short = SHORT_CLUSTER_FAULTS if args.cluster else SHORT_FAULTS
            args.faults = ",".join(short)
    if args.faults == "all":
        args.faults = ",".join(CLUSTER_FAULTS if args.cluster else ALL_FAULTS)
    args.faults = args.faults.split(",")
    unknown = set(args.faults) - set(ALL_FAULTS) - set(CLUSTER_FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    if not args.cluster and set(args.faults) & set(CLUSTER_FAULTS):
        parser.error("cluster faults need --cluster")
    return args


def environment(log_dir: Path) -> dict[str, str]:
    """The environment of every process of the run (and of this one)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webhooks_project.settings",
        "DJANGO_DEVELOPMENT": "1",
        "DJANGO_DEBUG": "0",
        "DJANGO_SSL_REDIRECT": "0",  # plain HTTP on 127.0.0.1
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
        "WEBHOOK_QUEUE_PREFIX": "faults.",
        "REDIS_URL": "redis://127.0.0.1:6379/9",
        "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        # A short schedule and short leases keep a run to minutes; the shape of
        # the schedule (backoff, broker vs database waits) is the production one.
        "WEBHOOK_RETRY_SCHEDULE": "1,2,4,8,15",
        "WEBHOOK_CONNECT_TIMEOUT": "1",
        "WEBHOOK_RESPONSE_TIMEOUT": "3",
        "WEBHOOK_PROGRESS_LEASE_MARGIN": "3",
        "WEBHOOK_QUEUE_LEASE_SECONDS": "30",
        "WEBHOOK_BROKER_COUNTDOWN_MAX": "5",
        "WEBHOOK_SWEEP_INTERVAL": "2",
        "WEBHOOK_TENANT_RATE_LIMIT": "100000",
        # The flaky receiver may open its circuit now and then; keep that bounded.
        "WEBHOOK_BREAKER_MAX_COOLDOWN": "60",
        "PROMETHEUS_MULTIPROC_DIR": str(log_dir / "metrics"),
        "LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    }


def prepare_database(env: dict[str, str]) -> None:
    """Create and migrate the run's database, then set Django up here."""
    os.environ.update(env)
    for args in (
        ["scripts/check_services.py", "--create-database"],
        ["manage.py", "migrate", "--noinput", "-v0"],
    ):
        subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, check=True)
    sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE deliveries_deliveryattempt, deliveries_delivery,"
            " deliveries_event, subscriptions_endpointsecret,"
            " subscriptions_endpoint, tenants_apikey, tenants_tenant CASCADE"
        )


def purge_queues(env: dict[str, str]) -> None:
    """Empty the run's queues and Redis database of earlier runs' leftovers."""
    from kombu import Connection

    from webhooks_project.queues import TASK_QUEUES
    from webhooks_project.redis_client import get_redis

    with Connection(env["CELERY_BROKER_URL"]) as conn:
        channel = conn.channel()
        for queue in TASK_QUEUES:
            queue.bind(channel).declare()
            queue.bind(channel).purge()
    drop_endpoint_queues()
    get_redis().flushdb()


def drop_endpoint_queues(endpoint_ids=None) -> None:
    """Delete these endpoints' queues (every announced one by default).

    Left alone, they would idle an hour before RabbitMQ deletes them.
    """
    from deliveries.flow import isolation

    try:
        isolation.delete(endpoint_ids)
    except Exception as exc:  # left to expire (x-expires)
        print(f"endpoint queues not deleted: {exc!r}")


class World:
    """The tenant, its API key, the endpoints and their receivers."""

    def __init__(self, *, seed: int):
        from subscriptions.services import endpoint_create
        from tenants.services import tenant_create_with_key

        issued = tenant_create_with_key(name=f"faults-{uuid.uuid4().hex[:8]}")
        self.key = issued.key
        specs = [
            ("steady-a", "steady", []),
            ("steady-b", "steady", []),
            ("flaky", "flaky", []),
            ("slow", "slow", ["report.*"]),
        ]
        self.receivers: dict[str, FaultReceiver] = {}
        for index, (name, behaviour, types) in enumerate(specs):
            receiver = FaultReceiver(
                name=name, secret=SECRET, behaviour=behaviour, seed=seed + index
            ).start()
            endpoint = endpoint_create(
                tenant=issued.api_key.tenant,
                url=receiver.url,
                event_types=types,
                secret=SECRET,
            )
            self.receivers[str(endpoint.pk)] = receiver

    def stop(self) -> None:
        for receiver in self.receivers.values():
            receiver.stop()


class Faults:
    """Injects the chosen faults in turn, and restarts processes that died."""

    def __init__(
        self, *, args, stack: dict[str, Process], world: World, producers, broker
    ):
        self.args = args
        self.broker: ClusterBroker | None = broker
        self.stack = stack
        self.world = world
        self.producers = producers
        self.done: Counter[str] = Counter()
        self.notes: list[str] = []
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the last round to finish (bounded), then stop."""
        self._thread.join(timeout)
        self.stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        cycle = itertools.cycle(self.args.faults)
        rounds = 0
        while not self.stop.is_set():
            # Keep going until publishing ends, and at least one full round.
            if self.producers.done.is_set() and rounds >= len(self.args.faults):
                return
            if self.stop.wait(self.args.fault_interval):
                return
            name = next(cycle)
            began = time.monotonic()
            try:
                if getattr(self, "_" + name.replace("-", "_"))():
                    self.done[name] += 1
                    log(f"{name} done in {time.monotonic() - began:.1f} s")
            except Exception as exc:  # a failed fault is reported, then healed
                self.notes.append(f"{name} failed: {exc!r}")
                log(f"{name} failed: {exc!r}")
                heal(self.broker)
            rounds += 1
            self.supervise()

    def supervise(self) -> None:
        """Restart any process that exited (what a process manager does)."""
        for process in self.stack.values():
            if not process.running:
                self.done[f"{process.name}-exited"] += 1
                process.kill()
                process.start()

    def _worker_child_kill(self) -> bool:
        children = self.stack["prefork"].children()
        if not children:
            return False
        os.kill(random.choice(children), signal.SIGKILL)
        return True

    def _worker_kill(self) -> bool:
        worker = self.stack["threads"]
        worker.signal(signal.SIGKILL)
        worker.wait(10)
        worker.kill()
        time.sleep(1)
        worker.start()
        return True

    def _worker_term(self) -> bool:
        slow = next(r for r in self.world.receivers.values() if r.behaviour == "slow")
        deadline = time.monotonic() + 10
        while not slow.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        if slow.in_flight:
            self.done["worker-term-mid-delivery"] += 1
        worker = self.stack["threads"]
        worker.signal(signal.SIGTERM)
        if not worker.wait(60):
            self.notes.append("warm shutdown took over 60 s: killed")
            worker.kill()
        worker.start()
        return True

    def _pg_terminate(self) -> bool:
        services.postgres_terminate(database=DATABASE)
        return True

    def _pg_restart(self) -> bool:
        services.postgres_restart()
        return True

    def _redis_restart(self) -> bool:
        services.redis_restart()
        return True

    def _rabbitmq_restart(self) -> bool:
        services.rabbitmq_stop()
        self.producers.broker_down.set()
        try:
            time.sleep(self.args.broker_down)
        finally:
            services.rabbitmq_start()
            self.producers.broker_down.clear()
        return True

    def _cluster_kill_leader(self) -> bool:
        return self.broker.kill_leader(down=self.args.broker_down)

    def _cluster_stop_node(self) -> bool:
        return self.broker.stop_leader(down=self.args.broker_down)

    def _cluster_no_quorum(self) -> bool:
        return self.broker.no_quorum(down=3 * self.args.broker_down)


def log(message: str) -> None:
    """A progress line (stdout is the run's log)."""
    print(f"{time.strftime('%H:%M:%S')} fault suite: {message}", flush=True)


def heal(broker: ClusterBroker | None = None) -> None:
    """Bring every service back, whatever a fault left behind."""
    services.postgres_ensure_running()
    services.redis_ensure_running()
    services.rabbitmq_ensure_running()
    if broker:
        broker.heal()


def drain(*, timeout: float) -> None:
    """Wait until every delivery is final, or the timeout passes."""
    from django.db import close_old_connections

    from .invariants import open_deliveries

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        close_old_connections()
        try:
            if open_deliveries() == 0:
                return
        except Exception:  # the database may still be coming back
            pass
        time.sleep(1)


def run(args: argparse.Namespace) -> int:
    """Run the suite; return 0 when every invariant holds."""
    for url in ("postgres://127.0.0.1", "redis://127.0.0.1", "amqp://127.0.0.1"):
        services.require_local(url)
    heal()
    log_dir = Path(tempfile.mkdtemp(prefix="webhooks-faults-"))
    (log_dir / "metrics").mkdir()
    env = environment(log_dir)
    broker = ClusterBroker() if args.cluster else None
    if broker:
        env["CELERY_BROKER_URL"] = broker.start()
        print(f"fault suite: cluster up in {broker.started_in:.0f} s")
    prepare_database(env)
    purge_queues(env)
    if broker:
        broker.await_replicas()
    started = time.monotonic()
    world = World(seed=args.seed)
    # Three endpoints take every event, the slow one every tenth.
    events = math.ceil(args.deliveries / (3 + 1 / SLOW_EVERY))
    stack: dict[str, Process] = {
        "web": Web(env=env, log_dir=log_dir),
        "threads": Worker(
            name="threads", pool="threads", concurrency=32, env=env, log_dir=log_dir
        ),
        "prefork": Worker(
            name="prefork", pool="prefork", concurrency=2, env=env, log_dir=log_dir
        ),
        "beat": Beat(env=env, log_dir=log_dir),
    }
    print(f"fault suite: logs in {log_dir}; {events} events, faults: {args.faults}")
    try:
        for process in stack.values():
            process.start()
        producers = Producers(
            web=stack["web"],
            key=world.key,
            events=events,
            rate=args.rate,
            lines=args.lines,
        )
        faults = Faults(
            args=args, stack=stack, world=world, producers=producers, broker=broker
        )
        producers.start(args.publishers)
        faults.start()
        producers.join(timeout=events / args.rate + Producers.PATIENCE + 120)
        published_at = time.monotonic()
        faults.join(timeout=300)
        heal(broker)
        faults.supervise()
        print(f"fault suite: published in {time.monotonic() - started:.0f} s; draining")
        drain(timeout=args.drain_timeout)
        wait_idle(list(world.receivers.values()), timeout=10)
        from .invariants import check

        summary = check(
            published=producers.published,
            receivers=world.receivers,
            faults=faults.done,
            final_bound=args.final_bound,
        )
        summary.elapsed = time.monotonic() - started
        for note in faults.notes:
            print(f"fault suite note: {note}")
        for v in summary.order_evidence:
            print(
                f"fault suite note: order violation at endpoint {v.endpoint}"
                f" ({world.receivers[v.endpoint].name}), line {v.line}:"
                f" counter {v.counter} arrived after {v.after}"
            )
        published = producers.published
        print(
            f"fault suite keyed: {published.keyed_accepted} keyed events accepted,"
            f" {published.rejected} rejected (4xx);"
            f" {published.given_up} events (keyed or not) given up"
        )
        print(f"fault suite answers: {dict(producers.published.answers)}")
        if broker:
            broker.report(world.receivers.values(), published_at=published_at)
        print(summary.line())
        return 0 if summary.ok else 1
    finally:
        for process in stack.values():
            process.stop(timeout=30)
        world.stop()
        heal(broker)
        # Its own, announced or not (a Redis restart forgets announcements).
        drop_endpoint_queues(world.receivers.keys())
        if broker:
            broker.teardown()


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(sys.argv[1:] if argv is None else argv))
