"""Shared fixtures: tenants and keys, API clients, local receivers, real workers."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from kombu import Connection
from rest_framework.test import APIClient

from deliveries.receiver import WebhookReceiver
from deliveries.services.holding import held_endpoints_forget
from tenants.services import tenant_create_with_key
from webhooks_project import redis_client
from webhooks_project.queues import TASK_QUEUES

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = ["127.0.0.0/8", "::1/128"]


def pytest_collection_modifyitems(config, items):
    """Run the fault tests last: they restart RabbitMQ and Redis under everyone."""
    items.sort(key=lambda item: item.get_closest_marker("faults") is not None)


@pytest.fixture(autouse=True)
def _fresh_held_endpoints():
    """Each test reads the refusing endpoints anew, not a copy up to 1 s old."""
    held_endpoints_forget()


@pytest.fixture(autouse=True)
def _allow_loopback(settings):
    """Tests' receivers run on 127.0.0.1, which the policy blocks by default."""
    settings.WEBHOOK_ALLOWED_NETWORKS = LOOPBACK


@pytest.fixture
def issued_key(db):
    """A tenant with an API key (the IssuedKey: `.api_key.tenant`, `.key`)."""
    return tenant_create_with_key(name=f"tenant-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def tenant(issued_key):
    """The tenant of `issued_key`."""
    return issued_key.api_key.tenant


@pytest.fixture
def api(issued_key):
    """An API client authenticated as `tenant`."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued_key.key}")
    return client


@pytest.fixture
def other_api(db):
    """An API client of a second, unrelated tenant."""
    issued = tenant_create_with_key(name=f"other-{uuid.uuid4().hex[:8]}")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.key}")
    client.tenant = issued.api_key.tenant
    return client


@pytest.fixture
def receiver():
    """A started local receiver; configure secrets/statuses on it per test."""
    with WebhookReceiver() as started:
        yield started


def test_database_url() -> str:
    """The URL of the database pytest-django created for this run."""
    db = django_settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{db['NAME']}"


test_database_url.__test__ = False


def purge_queues() -> None:
    """Drop messages left in this run's queues by earlier runs."""
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        for queue in TASK_QUEUES:
            queue.bind(channel).declare()
            queue.bind(channel).purge()


class WorkerProcess:
    """A real `celery worker` subprocess against the test database."""

    def __init__(
        self,
        *,
        env: dict[str, str],
        log_path: Path,
        concurrency: int = 8,
        pool: str = "threads",
    ):
        self.name = f"test-{uuid.uuid4().hex[:8]}@localhost"
        self.log_path = log_path
        queues = ",".join(queue.name for queue in TASK_QUEUES)
        self.args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "webhooks_project",
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "-Q",
            queues,
            "-n",
            self.name,
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ]
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "WorkerProcess":
        """Start the worker and wait until it consumes."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"worker exited: {self.log_path.read_text()[-3000:]}"
                )
            if b" ready." in self.log_path.read_bytes():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"worker not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop the worker (warm shutdown on SIGTERM), killing it if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL the worker: unacknowledged messages go back to the queue."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def worker_factory(transactional_db, tmp_path):
    """Start real workers with extra environment; all are stopped at teardown."""
    purge_queues()
    started: list[WorkerProcess] = []

    def start(*, pool: str = "threads", **extra_env: str) -> WorkerProcess:
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "DJANGO_DEVELOPMENT": "1",
            "WEBHOOK_ALLOWED_NETWORKS": ",".join(LOOPBACK),
            **extra_env,
        }
        log_path = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(env=env, log_path=log_path, pool=pool).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_until(predicate, *, timeout: float = 20.0, interval: float = 0.1):
    """Poll `predicate` until it returns truthy; return its value or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s")


@pytest.fixture
def redis_away(monkeypatch):
    """This process's Redis client pointed at a port where nothing listens."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(
        redis_client, "_client", redis.Redis(port=port, socket_connect_timeout=0.5)
    )
    monkeypatch.setattr(redis_client, "_client_pid", os.getpid())
