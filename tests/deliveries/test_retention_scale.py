"""The purge of 200,000 expired rows never holds ingest or delivery back.

50,000 events of two months ago, with 100,000 final deliveries and 50,000
attempts, are purged while events are posted through the API and a real worker
delivers them to a receiver on 127.0.0.1. The ingest requests run with a
lock timeout of one second, so any of them that waited that long for a lock
would fail; each must also answer within two seconds of wall time (CPU on a busy
two-core machine included). Every delivery succeeds, some of them while the
purge runs, and afterwards not one seeded row is left.
"""

import json
import threading
import time

import pytest
from django.db import connection, connections

from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from deliveries.receiver import WebhookReceiver
from deliveries.services.retention import PURGE_BATCH, events_purge_expired
from tests.conftest import wait_until
from tests.deliveries.expired_rows import seed_expired
from tests.factories import make_endpoint, make_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EVENTS = 50_000
ENDPOINTS = 2  # a delivery to each: 100,000 deliveries
ATTEMPTS = 50_000  # one for every other delivery
SEEDED_ROWS = EVENTS + EVENTS * ENDPOINTS + ATTEMPTS  # 200,000
INGEST_LOCK_TIMEOUT = "1s"
INGEST_MAX_SECONDS = 2.0


def seeded_rows(tenant) -> int:
    return (
        Event.objects.filter(tenant=tenant).count()
        + Delivery.objects.filter(tenant=tenant).count()
        + DeliveryAttempt.objects.filter(delivery__tenant=tenant).count()
    )


def purge_in_thread() -> tuple[threading.Thread, dict]:
    """A purge run started in a thread: `result` and when it `ended`."""
    purged: dict = {}

    def purge():
        try:
            purged["result"] = events_purge_expired()
        finally:
            purged["ended"] = time.time()
            connections.close_all()

    thread = threading.Thread(target=purge, daemon=True)
    thread.start()
    return thread, purged


def post_event(api) -> tuple[str, float]:
    """POST one event; its id and how long the request took."""
    started = time.monotonic()
    response = api.post(
        "/api/v1/events",
        json.dumps({"event_type": "order.created", "payload": {"n": 1}}),
        content_type="application/json",
    )
    took = time.monotonic() - started
    assert response.status_code == 202, response.content
    return response.json()["id"], took


def test_e2e_purge_of_200k_rows_beside_ingest_and_delivery(api, tenant, worker_factory):
    # given: the expired rows of another tenant, a worker and a receiver
    old = make_tenant()
    endpoints = [make_endpoint(tenant=old) for _ in range(ENDPOINTS)]
    seed_expired(old, endpoints, events=EVENTS, attempts_to=endpoints[0])
    assert seeded_rows(old) == SEEDED_ROWS
    worker_factory(concurrency=4)
    with WebhookReceiver() as receiver:
        created = api.post("/api/v1/endpoints", {"url": receiver.url}, format="json")
        assert created.status_code == 201, created.content
        # when: the purge runs while events are posted (a lock wait of a second
        # fails the request) and delivered
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = %s", [INGEST_LOCK_TIMEOUT])
        try:
            purge_started = time.time()
            thread, purged = purge_in_thread()
            posted, slowest = [], 0.0
            while thread.is_alive() or len(posted) < 20:
                event_id, took = post_event(api)
                posted.append(event_id)
                slowest = max(slowest, took)
                time.sleep(0.05)
            thread.join(60)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = DEFAULT")
        # then: every event delivered, some of them while the purge ran
        wait_until(lambda: len(receiver.received) >= len(posted), timeout=60)
        received = list(receiver.received)
    assert slowest < INGEST_MAX_SECONDS, slowest
    assert any(purge_started < r.received_at < purged["ended"] for r in received)
    assert {r.header("webhook-id") for r in received} == set(posted)
    assert not Delivery.objects.filter(tenant=tenant).exclude(
        status=DeliveryStatus.SUCCEEDED
    )
    # and the purge took every seeded row, in short batches, nothing of the
    # live tenant's
    result = purged["result"]
    assert result.finished
    assert (result.events, result.deliveries, result.attempts) == (
        EVENTS,
        EVENTS * ENDPOINTS,
        ATTEMPTS,
    )
    assert result.batches >= EVENTS // PURGE_BATCH
    assert seeded_rows(old) == 0
    assert Event.objects.filter(tenant=tenant).count() == len(posted)
