"""End to end with real Celery workers and beat on RabbitMQ, PostgreSQL and Redis."""

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import standardwebhooks
from prometheus_client.parser import text_string_to_metric_families

from deliveries.models import AttemptOutcome, Delivery, DeliveryStatus
from deliveries.publisher import Message, publisher
from deliveries.receiver import WebhookReceiver
from deliveries.services.sweeps import dead_letter_count, open_circuits_refresh
from subscriptions.models import Endpoint
from tests.conftest import (
    REPO_ROOT,
    needs_shared_metrics,
    purge_queues,
    test_database_url,
    wait_until,
)
from tests.factories import make_endpoint, make_event
from tests.faults.stack import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def publish(api, event_type="order.created", payload=None, **headers):
    body = {"event_type": event_type, "payload": payload or {"order_id": 1}}
    response = api.post(
        "/api/v1/events", json.dumps(body), content_type="application/json", **headers
    )
    assert response.status_code in (200, 202), response.content
    return response.json()


def create_endpoint(api, url, **fields):
    response = api.post("/api/v1/endpoints", {"url": url, **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def delivery_of(event_id) -> Delivery:
    return Delivery.objects.get(event_id=event_id)


def final(event_id, status):
    def check():
        delivery = delivery_of(event_id)
        return delivery if delivery.status == status else None

    return check


def sample(text: str, name: str) -> float:
    """The sum of a metric's samples in Prometheus text (`name` or `name{...`)."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    ]
    return sum(values)


def test_e2e_signed_delivery_verified_by_receiver(api, worker_factory):
    worker_factory()
    with WebhookReceiver() as receiver:
        endpoint = create_endpoint(api, receiver.url)
        receiver.secrets = (endpoint["secret"],)
        event = publish(api)
        delivery = wait_until(final(event["id"], DeliveryStatus.SUCCEEDED))
        [request] = receiver.received
    assert request.verified is True
    standardwebhooks.Webhook(endpoint["secret"]).verify(
        request.body.decode(), request.headers
    )
    assert delivery.attempt_count == 1


def test_e2e_fails_twice_then_succeeds_on_third_attempt(api, worker_factory):
    worker_factory(WEBHOOK_RETRY_SCHEDULE="1,1,1,1")
    with WebhookReceiver(statuses=[500, 503, 200]) as receiver:
        create_endpoint(api, receiver.url)
        event = publish(api)
        delivery = wait_until(final(event["id"], DeliveryStatus.SUCCEEDED), timeout=30)
        assert len(receiver.received) == 3
        ids = {request.header("webhook-id") for request in receiver.received}
    assert ids == {event["id"]}
    attempts = api.get(f"/api/v1/deliveries/{delivery.pk}/attempts").json()["results"]
    assert [a["number"] for a in attempts] == [1, 2, 3]
    assert [a["response_status"] for a in attempts] == [500, 503, 200]
    assert delivery.attempt_count == 3


@pytest.mark.parametrize(
    "statuses",
    [
        [500, 200],  # that attempt fails: the next follows at once
        [200],  # that attempt succeeds: it was the retry
    ],
)
def test_e2e_retry_during_an_attempt_follows_it_at_once_if_it_fails(
    api, worker_factory, statuses
):
    # given: a retry schedule of a minute, and a receiver answering after 2 s
    worker_factory(WEBHOOK_RETRY_SCHEDULE="60")
    with WebhookReceiver(statuses=statuses, delay=2) as receiver:
        create_endpoint(api, receiver.url)
        event = publish(api)
        delivery = wait_until(final(event["id"], DeliveryStatus.IN_PROGRESS))
        # when: retried through the API while that attempt is under way
        response = api.post(f"/api/v1/deliveries/{delivery.pk}/retry")
        assert response.status_code == 202
        assert response.json()["status"] == "in_progress"
        assert response.json()["retry_requested_at"] is not None
        # then: delivered within seconds (a failure is not followed a minute later)
        delivered = wait_until(final(event["id"], DeliveryStatus.SUCCEEDED), timeout=20)
        assert receiver.max_in_flight == 1  # never sent twice at once
        assert len(receiver.received) == len(statuses)
    assert delivered.attempt_count == len(statuses)
    # the request was answered: the representation no longer shows it
    shown = api.get(f"/api/v1/deliveries/{delivery.pk}").json()
    assert shown["retry_requested_at"] is None


def test_e2e_exhausted_retries_dead_letter_then_replay_delivers(api, worker_factory):
    worker_factory(WEBHOOK_RETRY_SCHEDULE="1,1")
    with WebhookReceiver(statuses=[500]) as receiver:
        endpoint = create_endpoint(api, receiver.url)
        event = publish(api)
        dead = wait_until(final(event["id"], DeliveryStatus.DEAD_LETTER), timeout=30)
        assert dead.attempt_count == 3
        assert len(receiver.received) == 3
        listed = api.get(f"/api/v1/dead-letters?endpoint={endpoint['id']}").json()
        assert [d["id"] for d in listed["results"]] == [str(dead.pk)]
        # when: the receiver is fixed and the operator replays
        receiver.set_statuses([200])
        replay = api.post(
            "/api/v1/dead-letters/replay", {"endpoint": endpoint["id"]}, format="json"
        )
        # then
        assert replay.json() == {"replayed": 1}
        delivered = wait_until(final(event["id"], DeliveryStatus.SUCCEEDED))
        assert len(receiver.received) == 4
    assert delivered.attempt_count == 4
    assert api.get("/api/v1/dead-letters").json()["results"] == []


def test_e2e_410_disables_endpoint(api, worker_factory):
    worker_factory()
    with WebhookReceiver(statuses=[410]) as receiver:
        endpoint = create_endpoint(api, receiver.url)
        event = publish(api)
        wait_until(final(event["id"], DeliveryStatus.DEAD_LETTER))
    detail = api.get(f"/api/v1/endpoints/{endpoint['id']}").json()
    assert detail["is_active"] is False
    assert "410" in detail["disabled_reason"]


def test_e2e_delivery_to_loopback_blocked_unless_allowed(api, worker_factory):
    # The endpoint was accepted while loopback was allowed; the worker's policy
    # (no WEBHOOK_ALLOWED_NETWORKS) refuses to connect at delivery time.
    worker_factory(WEBHOOK_ALLOWED_NETWORKS="", WEBHOOK_RETRY_SCHEDULE="60")
    with WebhookReceiver() as receiver:
        create_endpoint(api, receiver.url)
        event = publish(api)
        delivery = wait_until(final(event["id"], DeliveryStatus.FAILED))
        assert receiver.received == []
    attempt = delivery.attempts.get()
    assert attempt.outcome == AttemptOutcome.BLOCKED
    assert "127.0.0.1 is a loopback address" in attempt.error


def test_e2e_killed_worker_loses_nothing(api, worker_factory, beat_factory):
    """SIGKILL a worker mid-delivery: the message or the sweep brings it back."""
    env = {
        "WEBHOOK_CONNECT_TIMEOUT": "1",
        "WEBHOOK_RESPONSE_TIMEOUT": "4",
        "WEBHOOK_PROGRESS_LEASE_MARGIN": "1",
        "WEBHOOK_SWEEP_INTERVAL": "1",
    }
    first = worker_factory(**env)
    with WebhookReceiver(delay=2) as receiver:
        create_endpoint(api, receiver.url)
        events = [publish(api, payload={"n": n}) for n in range(5)]
        in_flight = Delivery.objects.filter(status=DeliveryStatus.IN_PROGRESS)
        wait_until(in_flight.exists, timeout=15)
        # when
        first.kill()
        receiver.set_delay(0)
        worker_factory(**env)
        beat_factory(**env)
        for event in events:
            wait_until(final(event["id"], DeliveryStatus.SUCCEEDED), timeout=40)
        got = {request.header("webhook-id") for request in receiver.received}
    assert got == {event["id"] for event in events}


def test_e2e_endpoint_disabled_after_accept_dead_letters(api, worker_factory):
    with WebhookReceiver() as receiver:
        endpoint = create_endpoint(api, receiver.url)
        event = publish(api)
        Endpoint.objects.filter(pk=endpoint["id"]).update(
            is_active=False, disabled_reason="paused"
        )
        worker_factory()
        delivery = wait_until(final(event["id"], DeliveryStatus.DEAD_LETTER))
        assert receiver.received == []
    assert "paused" in delivery.dead_letter_reason


@needs_shared_metrics
def test_e2e_metrics_cover_web_and_worker_processes(api, client, worker_factory):
    before = client.get("/metrics").content.decode()
    worker_factory()
    with WebhookReceiver() as receiver:
        create_endpoint(api, receiver.url)
        event = publish(api)
        wait_until(final(event["id"], DeliveryStatus.SUCCEEDED))
    after = client.get("/metrics").content.decode()
    # ingested in this (web) process, delivered in the worker process
    for name in (
        "webhook_events_ingested_total",
        "webhook_deliveries_succeeded_total",
        'webhook_delivery_attempts_total{result="success"}',
        "webhook_delivery_latency_seconds_count",
        "webhook_delivery_duration_seconds_count",
    ):
        assert sample(after, name) >= sample(before, name) + 1, name


# API.md: what /metrics exposes at least, and each one's type.
CONTRACT_METRICS = {
    "webhook_events_ingested": "counter",
    "webhook_delivery_attempts": "counter",
    "webhook_deliveries_succeeded": "counter",
    "webhook_deliveries_dead_lettered": "counter",
    "webhook_delivery_duration_seconds": "histogram",
    "webhook_delivery_latency_seconds": "histogram",
    "webhook_dlq_size": "gauge",
    "webhook_rate_limit_hits": "counter",
    "webhook_circuits_open": "gauge",
}


@needs_shared_metrics
def test_e2e_metrics_expose_every_contract_metric(api, client, tenant, worker_factory):
    # given: a delivery whose retries run out in a worker, a tenant over its rate
    # limit, and the sweep's refresh of the gauges
    worker_factory(WEBHOOK_RETRY_SCHEDULE="1")
    with WebhookReceiver(statuses=[500]) as receiver:
        create_endpoint(api, receiver.url)
        event = publish(api)
        wait_until(final(event["id"], DeliveryStatus.DEAD_LETTER), timeout=30)
    tenant.rate_limit = 1
    tenant.save()
    body = json.dumps({"event_type": "order.created", "payload": {}})
    statuses = [
        api.post("/api/v1/events", body, content_type="application/json").status_code
        for _ in range(4)
    ]
    assert 429 in statuses
    dead_letter_count()
    open_circuits_refresh()
    # when
    text = client.get("/metrics").content.decode()
    # then: every metric of the contract, with its type, and these events counted
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {name: families[name].type for name in CONTRACT_METRICS} == CONTRACT_METRICS
    assert sample(text, "webhook_dlq_size") >= 1
    assert sample(text, "webhook_deliveries_dead_lettered_total") >= 1
    assert sample(text, 'webhook_delivery_attempts_total{result="5xx"}') >= 2
    assert sample(text, 'webhook_rate_limit_hits_total{scope="tenant"}') >= 1


def test_e2e_worker_serves_the_metrics_of_its_host(api, worker_factory, tmp_path):
    """A worker host without web: the worker serves its directory's metrics."""
    port = free_port()
    host_dir = tmp_path / "worker-host-metrics"
    host_dir.mkdir()
    worker = worker_factory(
        WEBHOOK_WORKER_METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(host_dir)
    )
    with WebhookReceiver() as receiver:
        create_endpoint(api, receiver.url)
        event = publish(api)  # accepted here, in this process: another "host"
        wait_until(final(event["id"], DeliveryStatus.SUCCEEDED))

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert sample(text, "webhook_deliveries_succeeded_total") == 1
    assert sample(text, 'webhook_delivery_attempts_total{result="success"}') == 1
    assert sample(text, "webhook_events_ingested_total") == 0  # not on this host
    assert f"worker metrics on http://127.0.0.1:{port}/metrics" in worker.tail(20000)


def listening_inode(port: int) -> str | None:
    """The inode of the IPv4 socket listening on 127.0.0.1:`port` (/proc/net/tcp)."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":  # 0A: LISTEN
            return fields[9]
    return None


def holds_socket(pid: int, inode: str) -> bool:
    """Whether process `pid` has the socket open (False once it has exited)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) == f"socket:[{inode}]":
                return True
        except FileNotFoundError:
            continue  # closed while we looked
    return False


def test_e2e_prefork_children_do_not_hold_the_worker_metrics_port(worker_factory):
    # given: a prefork worker serving its metrics
    port = free_port()
    worker = worker_factory(
        pool="prefork", concurrency=1, WEBHOOK_WORKER_METRICS_PORT=str(port)
    )
    inode = wait_until(lambda: listening_inode(port))
    [first_child] = worker.children()
    # when: its pool child dies and is replaced (forked after the server started)
    os.kill(first_child, signal.SIGKILL)
    [child] = wait_until(
        lambda: [c for c in worker.children() if c != first_child] or None
    )
    # then: only the worker itself holds the listening socket
    assert holds_socket(worker.proc.pid, inode)
    wait_until(lambda: not holds_socket(child, inode))


def test_e2e_worker_whose_metrics_port_is_taken_still_delivers(api, worker_factory):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = worker_factory(WEBHOOK_WORKER_METRICS_PORT=str(port))
        with WebhookReceiver() as receiver:
            create_endpoint(api, receiver.url)
            event = publish(api)
            wait_until(final(event["id"], DeliveryStatus.SUCCEEDED))
    assert "cannot serve worker metrics" in worker.tail(20000)


def test_e2e_worker_without_a_shared_metrics_dir_says_so(api, worker_factory):
    # given: a worker whose metrics would be its own only
    alone = worker_factory(PROMETHEUS_MULTIPROC_DIR=None)  # left out
    shared = worker_factory()
    # when: both are running
    with WebhookReceiver() as receiver:
        create_endpoint(api, receiver.url)
        event = publish(api)
        wait_until(final(event["id"], DeliveryStatus.SUCCEEDED))
    # then: the one without the directory warns at start, the other does not
    warning = "PROMETHEUS_MULTIPROC_DIR is not set"
    assert warning in alone.tail(20000)
    assert warning not in shared.tail(20000)


def test_e2e_event_accepted_while_broker_down_is_delivered_later(
    tenant, worker_factory, beat_factory
):
    """Publishing with RabbitMQ unreachable: 202 from the rows, delivery afterwards."""
    from tests.factories import make_endpoint

    with WebhookReceiver() as receiver:
        make_endpoint(tenant=tenant, url=receiver.url)
        # given: a web process whose broker is unreachable (a closed port)
        script = (
            "from tenants.models import Tenant\n"
            "from rest_framework.test import APIClient\n"
            "from tenants.services import api_key_create\n"
            f"tenant = Tenant.objects.get(pk='{tenant.pk}')\n"
            "client = APIClient()\n"
            "client.credentials(HTTP_AUTHORIZATION='Bearer '"
            " + api_key_create(tenant=tenant).key)\n"
            "response = client.post('/api/v1/events', {'event_type': 'a.b',"
            " 'payload': {'x': 1}}, format='json', SERVER_NAME='localhost')\n"
            "print('STATUS', response.status_code, response.json()['id'])\n"
        )
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "DJANGO_DEVELOPMENT": "1",
            "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//",
        }
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        # then: accepted, and left for the sweep
        line = next(x for x in done.stdout.splitlines() if x.startswith("STATUS"))
        _, status, event_id = line.split()
        assert status == "202", done.stderr[-2000:]
        delivery = delivery_of(event_id)
        assert delivery.status == DeliveryStatus.PENDING
        # when: the broker is reachable again for a worker and beat
        env = {"WEBHOOK_SWEEP_INTERVAL": "1"}
        worker_factory(**env)
        beat_factory(**env)
        wait_until(final(event_id, DeliveryStatus.SUCCEEDED), timeout=30)
        assert [r.header("webhook-id") for r in receiver.received] == [event_id]


def test_e2e_message_with_a_malformed_delivery_id_is_dropped_alone(
    tenant, worker_factory
):
    with WebhookReceiver() as receiver:
        endpoint = make_endpoint(tenant=tenant, url=receiver.url)
        _, [delivery] = make_event(tenant=tenant)
        purge_queues()  # its message: published again below, with the bad one
        # given: a message whose delivery id is no UUID (another stack's, say),
        # published in one batch with a real delivery's
        publisher().publish(
            [Message("not-a-uuid", str(endpoint.pk)), Message(str(delivery.pk))]
        )
        # when: a worker takes both
        worker = worker_factory()
        # then: the real one is delivered at once (not left to its lease, as
        # when the bad id failed the batch's claim), the bad one dropped
        wait_until(final(str(delivery.event_id), DeliveryStatus.SUCCEEDED), timeout=15)
        assert len(receiver.received) == 1
    assert b"undecodable deliveries.deliver message dropped" in worker.log_since(0)
