"""Shared fixtures: tenants and keys, API clients, local receivers, real workers."""

import json
import os
import socket
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.test import override_settings
from kombu import Connection
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
    declare_native_delayed_delivery_exchanges_and_queues,
)
from rest_framework.test import APIClient

from deliveries.flow import isolation, refusals
from deliveries.receiver import WebhookReceiver
from tenants.services import tenant_create_with_key
from tests.faults.stack import Beat, Worker, free_port
from webhooks_project import multiproc, redis_client
from webhooks_project.queues import DELIVERIES_QUEUE, TASK_QUEUES, endpoint_queue_name

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = ["127.0.0.0/8", "::1/128"]


def pytest_collection_modifyitems(config, items):
    """Run the fault tests last: they restart RabbitMQ and Redis under everyone."""
    items.sort(key=lambda item: item.get_closest_marker("faults") is not None)


@pytest.fixture(autouse=True)
def _fresh_refusals():
    """Each test reads the refusing endpoints anew, not a copy up to 1 s old."""
    refusals.forget()


@pytest.fixture(autouse=True, scope="session")
def _static_files_uncollected():
    """Pages rendered in the test process link plain, unhashed static files.

    The manifest storage of settings.STORAGES needs `collectstatic` first; the
    browser tests (tests/test_pages_browser.py) collect the files and serve them
    through gunicorn and WhiteNoise as production does.
    """
    storages = {
        **django_settings.STORAGES,
        "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        },
    }
    with override_settings(STORAGES=storages):
        yield


@pytest.fixture(autouse=True)
def _allow_loopback(settings):
    """Tests' receivers run on 127.0.0.1, which the policy blocks by default,
    and tests make more endpoints there than one tenant may have at one host."""
    settings.WEBHOOK_ALLOWED_NETWORKS = LOOPBACK
    settings.WEBHOOK_MAX_ENDPOINTS_PER_HOST = 1000


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
    """Drop messages left in this run's queues by earlier runs.

    Endpoint queues (deliveries/flow/isolation.py) are deleted with their
    announcements: a worker started next would otherwise consume every one an
    earlier test announced.
    """
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        # As a worker does on starting, so that countdowns reach these queues
        # before any worker ran.
        declare_native_delayed_delivery_exchanges_and_queues(conn, "quorum")
        for queue in TASK_QUEUES:
            queue.bind(channel).declare()
            queue.bind(channel).purge()
            bind_queue_to_native_delayed_delivery_exchange(conn, queue)
    try:
        isolation.delete()
        redis_client.get_redis().delete(isolation.ISOLATED_KEY)
    except redis.RedisError:  # a test that took Redis away: nothing to read
        pass


def queued_deliveries(names) -> Counter:
    """How many messages of each delivery the queues `names` hold (taken out).

    Counted by delivery id, so that a countdown an earlier test published
    (RabbitMQ routes it when due, whatever purge came since) is not counted as
    this test's.
    """
    found: Counter = Counter()
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        for name in names:
            while (message := channel.basic_get(name, no_ack=True)) is not None:
                found[json.loads(message.body)[0][0]] += 1
    return found


def fresh_queues() -> list[str]:
    """The queues fresh deliveries wait in: the shared one, and each endpoint's."""
    try:
        announced = isolation.announced_since(0)
    except redis.RedisError:  # a test that took Redis away: none was announced
        announced = {}
    return [DELIVERIES_QUEUE] + [endpoint_queue_name(e) for e in sorted(announced)]


def _process_env(extra_env: dict[str, str | None]) -> dict[str, str]:
    """The environment of a worker or beat started against the test database.

    An `extra_env` value of None leaves that variable out.
    """
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "DJANGO_DEVELOPMENT": "1",
        "WEBHOOK_ALLOWED_NETWORKS": ",".join(LOOPBACK),
        **extra_env,
    }
    return {name: value for name, value in env.items() if value is not None}


@pytest.fixture
def worker_factory(transactional_db, tmp_path):
    """Start real workers with extra environment; all are stopped at teardown.

    Each is a `celery worker` subprocess (tests/faults/stack.py) that is ready
    when returned; `.node` is its Celery node name, `.log_path` its log.
    """
    purge_queues()
    started: list[Worker] = []

    def start(*, pool: str = "threads", concurrency: int = 8, **extra_env) -> Worker:
        worker = Worker(
            name=f"worker-{len(started)}",
            pool=pool,
            concurrency=concurrency,
            env=_process_env(extra_env),
            log_dir=tmp_path,
        )
        started.append(worker)
        return worker.start(timeout=30)

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def beat_factory(transactional_db, tmp_path):
    """Start real `celery beat` processes (the sweeps); stopped at teardown."""
    started: list[Beat] = []

    def start(**extra_env) -> Beat:
        beat = Beat(env=_process_env(extra_env), log_dir=tmp_path)
        started.append(beat)
        return beat.start(timeout=30)

    yield start
    for beat in started:
        beat.stop(timeout=15)


def wait_until(predicate, *, timeout: float = 20.0, interval: float = 0.1):
    """Poll `predicate` until it returns truthy; return its value or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s")


# For tests that read other processes' metrics through /metrics or their files.
needs_shared_metrics = pytest.mark.skipif(
    not multiproc.shared(),
    reason="needs PROMETHEUS_MULTIPROC_DIR, which `make test` sets",
)


@pytest.fixture
def database_away():
    """Point the connection at a port where nothing listens, then restore it."""
    real_port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    yield
    connection.close()
    connection.settings_dict["PORT"] = real_port


@pytest.fixture
def redis_away(monkeypatch):
    """This process's Redis client pointed at a port where nothing listens."""
    take_redis_away(monkeypatch)


def take_redis_away(monkeypatch) -> None:
    """Point this process's Redis client at a port where nothing listens."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(
        redis_client, "_client", redis.Redis(port=port, socket_connect_timeout=0.5)
    )
    monkeypatch.setattr(redis_client, "_client_pid", os.getpid())
