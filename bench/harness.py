"""Shared pieces of the benchmarks: a bench database, workers, receivers, timing.

Everything runs on 127.0.0.1 and stops by itself: workers are started and ended by
pid, every loop is bounded in count and time.
"""

import os
import signal
import statistics
import subprocess
import sys
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
    "WEBHOOK_QUEUE_PREFIX": "bench.",
    "REDIS_URL": "redis://127.0.0.1:6379/8",
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "LOG_LEVEL": "WARNING",
}


def setup_django() -> None:
    """Configure this process for the bench database and migrate it."""
    os.environ.update(BENCH_ENV)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")
    sys.path.insert(0, str(REPO))
    subprocess.run(
        [sys.executable, "scripts/check_services.py", "--create-database"],
        cwd=REPO,
        env={**os.environ},
        check=True,
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=REPO,
        env={**os.environ},
        check=True,
    )
    import django

    django.setup()


def reset_state() -> None:
    """Empty the bench tables, queues and Redis database between runs."""
    from django.conf import settings
    from django.db import connection
    from kombu import Connection

    from webhooks_project.queues import TASK_QUEUES
    from webhooks_project.redis_client import get_redis

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE deliveries_deliveryattempt, deliveries_delivery, "
            "deliveries_event, subscriptions_endpointsecret, subscriptions_endpoint, "
            "tenants_apikey, tenants_tenant CASCADE"
        )
    with Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        for queue in TASK_QUEUES:
            queue.bind(channel).declare()
            queue.bind(channel).purge()
    get_redis().flushdb()


class Worker:
    """A `celery worker` subprocess with the bench settings."""

    def __init__(self, *, concurrency: int, env: dict[str, str] | None = None):
        self.log = Path(f"/tmp/bench-worker-{uuid.uuid4().hex[:6]}.log")
        self.args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "webhooks_project",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "WARNING",
            "-n",
            f"bench-{uuid.uuid4().hex[:6]}@localhost",
        ]
        self.env = {**os.environ, **BENCH_ENV, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Worker":
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        # Wait until it consumes (a no-op ping through the broker would need a
        # result backend; the worker prints "ready" only at INFO, so poll its pid).
        time.sleep(4)
        if self.proc.poll() is not None:
            raise RuntimeError(self.log.read_text()[-2000:])
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def rss_kib(self) -> int:
        """Resident memory of the worker process."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmRSS"))
        return int(line.split()[1])


class Pacer:
    """Call `fn` at `rate` per second for `seconds` (bounded), from one thread."""

    def __init__(self, fn, *, rate: float, seconds: float):
        self.fn, self.rate, self.seconds = fn, rate, seconds
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        total = int(self.rate * self.seconds)
        for index in range(total):
            due = start + index / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.fn(index)
            self.sent += 1
            if time.monotonic() - start > self.seconds * 3:
                break  # publishing cannot keep up: stop, bounded

    def start(self) -> "Pacer":
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join()


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (nearest rank) of `values`."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    """The median, or nan."""
    return statistics.median(values) if values else float("nan")
