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
from django.db import connection, connections, transaction

from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from deliveries.receiver import WebhookReceiver
from deliveries.services.retention import PURGE_BATCH, events_purge_expired
from tests.conftest import wait_until
from tests.factories import make_endpoint, make_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EVENTS = 50_000
ENDPOINTS = 2  # a delivery to each: 100,000 deliveries
ATTEMPTS = 50_000  # one for every other delivery
SEEDED_ROWS = EVENTS + EVENTS * ENDPOINTS + ATTEMPTS  # 200,000
INGEST_LOCK_TIMEOUT = "1s"
INGEST_MAX_SECONDS = 2.0

# A UUIDv7 of the moment `ts` (as the application makes them), random from `salt`.
UUID7 = (
    "(lpad(to_hex(floor(extract(epoch FROM {ts}) * 1000)::bigint), 12, '0') || '7'"
    " || substr(md5({salt}), 1, 3) || '8' || substr(md5({salt}), 4, 15))::uuid"
)


def seed_expired(tenant, endpoints) -> None:
    """EVENTS events of 60 days ago, each delivered to every endpoint (1 % dead
    letters), and an attempt for every other delivery."""
    event_id = UUID7.format(ts="ts", salt="i::text")
    delivery_id = UUID7.format(ts="e.created_at", salt="e.id::text || j")
    with transaction.atomic(), connection.cursor() as cursor:
        # Without triggers: no foreign-key check per row (valid by construction).
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            f"""
            INSERT INTO deliveries_event (id, tenant_id, event_type, payload,
                idempotency_key, request_hash, created_at)
            SELECT {event_id}, %(tenant)s, 'order.created',
                   jsonb_build_object('n', i), NULL, '', ts
            FROM (SELECT i, now() - interval '60 days' + i * interval '1 ms' AS ts
                  FROM generate_series(1, %(events)s) AS i) AS s
            """,
            {"tenant": tenant.pk, "events": EVENTS},
        )
        cursor.execute(
            f"""
            INSERT INTO deliveries_delivery (id, tenant_id, event_id, endpoint_id,
                status, attempt_count, round_start, next_attempt_at,
                lease_expires_at, last_status_code, last_error, dead_letter_reason,
                succeeded_at, dead_lettered_at, created_at, updated_at)
            SELECT {delivery_id}, e.tenant_id, e.id, (%(endpoints)s::uuid[])[j],
                   CASE WHEN e.n %% 100 = 0 THEN %(dead)s ELSE %(ok)s END,
                   1, 0, NULL, NULL, 200, '', '', e.created_at, NULL,
                   e.created_at, e.created_at
            FROM (SELECT *, row_number() OVER () AS n FROM deliveries_event
                  WHERE tenant_id = %(tenant)s) AS e,
                 generate_series(1, %(fan_out)s) AS j
            """,
            {
                "tenant": tenant.pk,
                "endpoints": [str(endpoint.pk) for endpoint in endpoints],
                "fan_out": len(endpoints),
                "dead": DeliveryStatus.DEAD_LETTER,
                "ok": DeliveryStatus.SUCCEEDED,
            },
        )
        cursor.execute(
            """
            INSERT INTO deliveries_deliveryattempt (delivery_id, number, started_at,
                duration_ms, outcome, request_headers, response_status,
                response_headers, response_body, error)
            SELECT id, 1, created_at, 5, 'success', '{}', 200, '{}', '', ''
            FROM deliveries_delivery
            WHERE tenant_id = %(tenant)s AND endpoint_id = %(first)s
            """,
            {"tenant": tenant.pk, "first": endpoints[0].pk},
        )
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
    with connection.cursor() as cursor:
        for table in ("deliveries_event", "deliveries_delivery"):
            cursor.execute(f"ANALYZE {table}")


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
    seed_expired(old, [make_endpoint(tenant=old) for _ in range(ENDPOINTS)])
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
