"""Lag-tolerant reads on a real streaming replica; writes and the rest on the primary.

A PostgreSQL primary and its replica of the test's own (postgres_pair.py), the
project's migrations on the primary, and gunicorn with DATABASE_URL on the
primary and DATABASE_REPLICA_URL on the replica, as a deployment sets them. With
the replica's replay paused, rows written on the primary are not on the replica:
a read routed there (the lists, the dashboard) does not show them, and one that
must stay on the primary (authentication, one object by id) does. Replay
resumed, the routed reads show them; the replica stopped, they come from the
primary.
"""

import json
import os
import subprocess
import sys

import pytest
import requests

from tests.conftest import LOOPBACK, REPO_ROOT
from tests.faults.stack import Web
from tests.replica.postgres_pair import PostgresPair, unavailable_reason

pytestmark = pytest.mark.skipif(
    unavailable_reason() is not None, reason=unavailable_reason() or ""
)

FALLBACK_LOG = "replica read failed, reading the primary instead"
PUBLISHED_TYPE = "invoice.paid"  # matches no endpoint of the seed: nothing queued


@pytest.fixture
def pair():
    """A primary and its streaming replica, stopped and removed afterwards."""
    with PostgresPair() as started:
        yield started


@pytest.fixture
def env(pair, tmp_path) -> dict[str, str]:
    """The environment of the web process and of the scripts run on the pair."""
    (tmp_path / "metrics").mkdir()
    return {
        **os.environ,
        "DATABASE_URL": pair.primary.url(),
        "DATABASE_REPLICA_URL": pair.replica.url(),
        "DJANGO_DEVELOPMENT": "1",
        "DJANGO_DEBUG": "0",
        "DJANGO_SSL_REDIRECT": "0",  # plain HTTP on 127.0.0.1
        "WEBHOOK_ALLOWED_NETWORKS": ",".join(LOOPBACK),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def web(env, tmp_path):
    """gunicorn (one process) on the migrated primary and its replica."""
    migrate = subprocess.Popen(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=REPO_ROOT,
        env=env,
    )
    server = Web(env=env, log_dir=tmp_path, workers=1)
    try:
        server.start()  # while the migrations run: it needs no table to boot
        assert migrate.wait(timeout=120) == 0
        yield server
    finally:
        migrate.kill()
        server.stop()


def seed(env: dict[str, str]) -> dict:
    """Write the seed's rows on the primary (tests/replica/seed.py)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.replica.seed"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def routed_reads(web: Web, api: requests.Session, seeded: dict) -> dict:
    """What each read routed to the replica shows: ids (attempts: numbers)."""

    def results(path: str) -> list:
        response = api.get(f"{web.url}/api/v1/{path}")
        assert response.status_code == 200, response.text
        return response.json()["results"]

    delivery = seeded["delivery"]
    dashboard = requests.get(
        f"{web.url}/dashboard/data.json",
        headers={"Cookie": seeded["cookie"]},
        timeout=10,
    )
    assert dashboard.status_code == 200, dashboard.text
    figures = dashboard.json()
    return {
        "events": {row["id"] for row in results("events")},
        "deliveries": {row["id"] for row in results("deliveries")},
        "dead letters": {row["id"] for row in results("dead-letters")},
        "attempts": {
            row["number"] for row in results(f"deliveries/{delivery}/attempts")
        },
        "dashboard dead letters": figures["dead_letters"],
        "dashboard attempts": {row["id"] for row in figures["recent_attempts"]},
    }


def test_lag_tolerant_reads_use_the_replica_and_fall_back_to_the_primary(
    pair, env, web
):
    # given: the replica has replayed the migrations, then replays nothing more
    pair.caught_up()
    pair.pause_replay()

    # when: rows are written on the primary: the seed, and an event through the API
    seeded = seed(env)
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {seeded['api_key']}"
    published = api.post(
        f"{web.url}/api/v1/events",
        json={"event_type": PUBLISHED_TYPE, "payload": {"n": 2}},
        timeout=10,
    )

    # then: the key, on the primary only, authenticated the write, made there...
    assert published.status_code == 202, published.text
    events = {seeded["event"], published.json()["id"]}
    count = "SELECT count(*) FROM deliveries_event WHERE id = ANY(%s::uuid[])"
    assert pair.primary.sql(count, [list(events)]) == [(2,)]
    assert pair.replica.sql(count, [list(events)]) == [(0,)]
    # ... one object by id is read on the primary...
    for path in (
        f"events/{published.json()['id']}",
        f"deliveries/{seeded['delivery']}",
    ):
        assert api.get(f"{web.url}/api/v1/{path}").status_code == 200, path
    # ... and the lists and the dashboard on the replica, which has none of them
    nothing = {
        "events": set(),
        "deliveries": set(),
        "dead letters": set(),
        "attempts": set(),
        "dashboard dead letters": 0,
        "dashboard attempts": set(),
    }
    assert routed_reads(web, api, seeded) == nothing

    # when: the replica replays again
    pair.resume_replay()
    pair.caught_up()

    # then: every routed read shows the rows
    everything = {
        "events": events,
        "deliveries": {seeded["delivery"]},
        "dead letters": {seeded["delivery"]},
        "attempts": {1},
        "dashboard dead letters": 1,
        "dashboard attempts": {seeded["attempt"]},
    }
    assert routed_reads(web, api, seeded) == everything
    assert FALLBACK_LOG not in web.tail(100_000)

    # when: the replica stops, and another event is published
    pair.stop(pair.replica)
    later = api.post(
        f"{web.url}/api/v1/events",
        json={"event_type": PUBLISHED_TYPE, "payload": {"n": 3}},
        timeout=10,
    )

    # then: the routed reads come from the primary, the newest event included
    assert later.status_code == 202, later.text
    everything["events"] = events | {later.json()["id"]}
    assert routed_reads(web, api, seeded) == everything
    assert FALLBACK_LOG in web.tail(100_000)
    # and the web stays ready: the replica is not one of its dependencies
    assert requests.get(f"{web.url}/ready", timeout=10).status_code == 200
