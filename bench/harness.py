"""Shared pieces of the benchmarks: bench database, worlds, backlogs, load, timing.

Everything runs on 127.0.0.1 and stops by itself: every loop is bounded in count
and time; processes are started and ended by pid (bench/stack.py).
"""

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH_DB = os.environ.get("BENCH_DATABASE", "webhooks_bench")
BENCH_ENV = {
    "DJANGO_DEVELOPMENT": "1",
    # Production-like: DEBUG would record every query in memory.
    "DJANGO_DEBUG": "0",
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}",
    # BENCH_QUEUE_PREFIX and BENCH_REDIS_URL move them aside (a second session
    # on the same machine), as BENCH_DATABASE does the databases.
    "WEBHOOK_QUEUE_PREFIX": os.environ.get("BENCH_QUEUE_PREFIX", "bench."),
    "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8"),
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    # Every receiver listens on 127.0.0.1: one host for hundreds of endpoints.
    "WEBHOOK_MAX_ENDPOINTS_PER_HOST": "1000",
    # Warnings only: one INFO line per delivery would measure the log sink.
    "LOG_LEVEL": "WARNING",
    # Plain HTTP on 127.0.0.1, as behind a TLS-terminating proxy (no 301 to https).
    "DJANGO_SSL_REDIRECT": "0",
}


def database_url(name: str) -> str:
    """URL of a bench database on the local server."""
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def prepare_database(name: str) -> None:
    """Create (if missing) and migrate a bench database, in subprocesses."""
    env = {**os.environ, **BENCH_ENV, "DATABASE_URL": database_url(name)}
    for command in (
        ["scripts/check_services.py", "--create-database"],
        ["manage.py", "migrate", "--noinput", "-v0"],
    ):
        subprocess.run(
            [sys.executable, *command],
            cwd=REPO,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )


def wait_for_services(timeout: float = 300) -> None:
    """Wait until PostgreSQL, RabbitMQ and Redis answer (they may be restarting)."""
    env = {**os.environ, **BENCH_ENV}
    deadline = time.monotonic() + timeout
    while True:
        check = subprocess.run(
            [sys.executable, "scripts/check_services.py"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        if check.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"services unavailable:\n{check.stdout}{check.stderr}")
        print("  waiting for PostgreSQL, RabbitMQ and Redis ...", flush=True)
        time.sleep(10)


def setup_django() -> None:
    """Configure this process for the bench database and migrate it."""
    os.environ.update(BENCH_ENV)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp())
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    for attempt in range(3):  # the services may restart under our feet
        wait_for_services()
        try:
            prepare_database(BENCH_DB)
            break
        except subprocess.CalledProcessError:
            if attempt == 2:
                raise
            time.sleep(10)
    import django

    django.setup()


def use_database(name: str) -> None:
    """Point this process's default connection at another bench database."""
    from django.db import connections

    connection = connections["default"]
    connection.close()
    connection.settings_dict["NAME"] = name


def reset_state(*, keep_tenant=None) -> None:
    """Empty the bench tables (all but one tenant's rows), queues and Redis db."""
    from django.conf import settings
    from django.db import connection
    from kombu import Connection

    from webhooks_project.queues import TASK_QUEUES
    from webhooks_project.redis_client import get_redis

    with connection.cursor() as cursor:
        if keep_tenant is None:
            cursor.execute(
                "TRUNCATE deliveries_deliveryattempt, deliveries_delivery, "
                "deliveries_event, subscriptions_endpointsecret, "
                "subscriptions_endpoint, tenants_apikey, tenants_tenant CASCADE"
            )
        else:
            # The growth database: keep the seeded tenant's millions of rows.
            for table in (
                # Only the weeks after the seeded ones: the bench's own rows.
                "deliveries_deliveryattempt WHERE delivery_id IN (SELECT id FROM "
                "deliveries_delivery WHERE tenant_id <> %(t)s) AND started_at >= "
                "(SELECT until FROM bench_seed)",
                "deliveries_delivery WHERE tenant_id <> %(t)s",
                "deliveries_event WHERE tenant_id <> %(t)s",
                "subscriptions_endpointsecret WHERE endpoint_id IN (SELECT id FROM "
                "subscriptions_endpoint WHERE tenant_id <> %(t)s)",
                "subscriptions_endpoint WHERE tenant_id <> %(t)s",
                "tenants_apikey WHERE tenant_id <> %(t)s",
                "tenants_tenant WHERE id <> %(t)s",
            ):
                cursor.execute(f"DELETE FROM {table}", {"t": keep_tenant})
    with Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        for queue in TASK_QUEUES:
            queue.bind(channel).declare()
            queue.bind(channel).purge()
    get_redis().flushdb()


class World:
    """A bench tenant with an API key and endpoints on local receivers."""

    def __init__(self):
        from tenants.services import tenant_create_with_key

        issued = tenant_create_with_key(
            name=f"bench-{uuid.uuid4().hex[:8]}", rate_limit=1_000_000
        )
        self.tenant = issued.api_key.tenant
        self.key = issued.key
        self.receivers = []
        self.by_type: dict[str, list] = {}

    def add_receivers(
        self,
        count: int,
        *,
        event_type: str,
        delay: float = 0.0,
        keep: bool = True,
        max_in_flight: int | None = None,
    ):
        """Start `count` receivers answering after `delay` s, subscribed to a type.

        `keep=False`: they count requests without keeping a record of each.
        `max_in_flight`: their endpoints' own in-flight cap.
        """
        from bench.receiver import BenchReceiver
        from subscriptions.services import endpoint_create

        started = [BenchReceiver(delay=delay, keep=keep).start() for _ in range(count)]
        for receiver in started:
            endpoint_create(
                tenant=self.tenant,
                url=receiver.url,
                event_types=[event_type],
                max_in_flight=max_in_flight,
            )
        self.receivers += started
        self.by_type.setdefault(event_type, []).extend(started)
        return started

    def received(self, event_type: str) -> list:
        """Requests received by the receivers of one event type."""
        return [r for rec in self.by_type.get(event_type, []) for r in rec.received]

    def counted(self, event_type: str) -> int:
        """How many requests the receivers of one event type received."""
        return sum(receiver.count for receiver in self.by_type.get(event_type, []))

    def stop(self, *, drop_queues: bool = True) -> None:
        """Stop every receiver; drop this world's endpoint queues.

        Workers started later would otherwise consume the queues of every
        world before (for as long as they were announced lately). Queues are
        dropped once no worker runs: RabbitMQ cancels a worker's consumer of a
        deleted queue, and the worker reconnects and declares it again.
        """
        from deliveries.flow import isolation
        from subscriptions.models import Endpoint

        for receiver in self.receivers:
            receiver.stop()
        if not drop_queues:
            return
        left = isolation.delete(
            Endpoint.objects.filter(tenant=self.tenant).values_list("pk", flat=True)
        )
        if any(left.values()):
            print(f"    messages left in endpoint queues: {sorted(left.values())}")


def settle_database() -> None:
    """Vacuum the fresh rows and checkpoint before a measured run.

    Rows just loaded in bulk have no hint bits or visibility map yet, and a
    checkpoint may be due: whichever run came first paid for them, in
    writeback, which made repeated runs differ by a third.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) deliveries_delivery, deliveries_event")
        cursor.execute("CHECKPOINT")


def noop_backlog(count: int, *, threads: int = 4) -> None:
    """Publish `count` no-op tasks to the deliveries queue."""
    from celery import current_app

    from webhooks_project.queues import DELIVERIES_QUEUE

    def publish(indexes: range) -> None:
        for index in indexes:
            current_app.send_task("bench.noop", (index,), queue=DELIVERIES_QUEUE)

    parallel(publish, [range(i, count, threads) for i in range(threads)])


def parallel(fn, items: list) -> None:
    """Run fn(item) for each item in its own thread; re-raise the first error."""
    errors: list[BaseException] = []

    def run(item) -> None:
        try:
            fn(item)
        except BaseException as exc:  # noqa: BLE001 (re-raised below)
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy so far (/proc/stat), seconds.

    Every process here is the benchmark's (services included); time stolen by
    the hypervisor and idle time do not count, so a slower spell of the shared
    VM changes throughput far more than this.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class CpuClock:
    """Samples the machine's busy CPU time in the background (every 0.1 s)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), busy_cpu_seconds()))
            self._stop.wait(0.1)

    def __enter__(self) -> "CpuClock":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def per_item(self, times: list[float], *, trim: float = 0.05) -> float:
        """Busy CPU seconds per item over the window `rate_of` measures."""
        if len(times) < 20 or not self.samples:
            return float("nan")
        cut = int(len(times) * trim)
        window = times[cut : len(times) - cut]

        def at(moment: float) -> float:
            return min(self.samples, key=lambda sample: abs(sample[0] - moment))[1]

        return (at(window[-1]) - at(window[0])) / (len(window) - 1)


def wait_drained(world, event_type: str, expected: int, *, timeout: float) -> list:
    """Wait until `expected` requests of a type arrived, or timeout; their times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and world.counted(event_type) < expected:
        time.sleep(0.05)
    return sorted(request.received_at for request in world.received(event_type))


def rate_of(times: list[float], *, trim: float = 0.05) -> float:
    """Items per second between the first and the last, ends trimmed by `trim`.

    Trimming drops the ramp-up (threads connecting) and the tail (the last few
    stragglers), so the figure is the steady drain rate.
    """
    if len(times) < 20:
        return (
            float("nan")
            if len(times) < 2
            else (len(times) - 1) / (times[-1] - times[0])
        )
    cut = int(len(times) * trim)
    window = times[cut : len(times) - cut]
    return (len(window) - 1) / (window[-1] - window[0])


def in_flight(times: list[float], *, hold: float) -> float:
    """Median number of requests held at once (each held `hold` s), sampled."""
    if len(times) < 20:
        return float("nan")
    cut = int(len(times) * 0.1)
    start, end = times[cut], times[-cut - 1]
    samples, lo, hi, step = [], 0, 0, 0.02
    instant = start
    while instant < end:
        while hi < len(times) and times[hi] <= instant:
            hi += 1
        while lo < hi and times[lo] <= instant - hold:
            lo += 1
        samples.append(hi - lo)
        instant += step
    return statistics.median(samples)


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (nearest rank) of `values`."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    """The median, or nan."""
    values = [value for value in values if value == value]
    return statistics.median(values) if values else float("nan")


class Timed:
    """`work()` in a thread: what it returned, and how long it took."""

    def __init__(self, work):
        self.work = work
        self.result, self.elapsed = None, float("nan")
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Timed":
        self.thread.start()
        return self

    def wait(self, limit: float) -> tuple:
        """What `work()` returned and its seconds (raises what it raised)."""
        self.thread.join(limit)
        if self.thread.is_alive():
            raise TimeoutError(f"still running after {limit:.0f} s")
        if self.error is not None:
            raise self.error
        return self.result, self.elapsed

    def _run(self) -> None:
        from django.db import connections

        started = time.monotonic()
        try:
            self.result = self.work()
        except Exception as exc:  # noqa: BLE001 (re-raised by wait())
            self.error = exc
        finally:
            self.elapsed = time.monotonic() - started
            connections.close_all()
