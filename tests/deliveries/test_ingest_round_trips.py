"""What one accepted event costs in round trips, counted so it cannot creep back.

`POST /api/v1/events` fanned out to three endpoints, against the real services:
the statements sent to PostgreSQL, the commands (or pipelines) sent to Redis, and
the writes to RabbitMQ's socket, counted where each client library hands them to
its socket. The counters wrap the libraries' methods and call through.
"""

import uuid

import psycopg
import pytest
from amqp.transport import _AbstractTransport
from redis.connection import AbstractConnection

from deliveries.flow import refusals
from deliveries.models import Delivery
from tests.conftest import purge_queues
from tests.factories import make_endpoint

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"event_type": "order.created", "payload": {"order_id": 1}}


@pytest.fixture
def counted(monkeypatch):
    """Calls of each client's send path, by service."""
    counts = {"postgres": 0, "redis": 0, "rabbitmq": 0}

    def counting(cls, name, service):
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            counts[service] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    counting(psycopg.Cursor, "execute", "postgres")
    counting(psycopg.Cursor, "executemany", "postgres")
    counting(psycopg.Connection, "commit", "postgres")
    counting(AbstractConnection, "send_packed_command", "redis")
    counting(_AbstractTransport, "write", "rabbitmq")
    return counts


def post(api, key=None):
    response = api.post(
        "/api/v1/events",
        BODY,
        format="json",
        HTTP_IDEMPOTENCY_KEY=key or uuid.uuid4().hex,
    )
    assert response.status_code == 202, response.content
    return response.json()


def test_an_event_costs_two_statements_one_redis_call_and_one_broker_write(
    api, tenant, counted
):
    for n in range(3):
        make_endpoint(tenant=tenant, url=f"http://127.0.0.1:9/{n}")
    purge_queues()
    post(api)  # the first request connects, prepares and declares
    # Read now (with their endpoints' tenants): not due again within the request.
    refusals.refusing(fresh=True)
    refusals.refusing_for_tenant(tenant.pk)
    for service in counted:
        counted[service] = 0

    event = post(api)

    # the API key's lookup, then the event and its fan-out in one statement
    assert counted["postgres"] == 2
    # the tenant's rate-limit bucket
    assert counted["redis"] == 1
    # the three task messages in one write (the confirms are read, not written)
    assert counted["rabbitmq"] == 1
    assert event["deliveries"] == 3
    assert Delivery.objects.filter(event_id=event["id"]).count() == 3
    purge_queues()


def test_a_repeated_key_costs_no_broker_write(api, tenant, counted):
    make_endpoint(tenant=tenant)
    purge_queues()
    key = uuid.uuid4().hex
    first = post(api, key)
    refusals.refusing(fresh=True)
    refusals.refusing_for_tenant(tenant.pk)
    for service in counted:
        counted[service] = 0

    response = api.post("/api/v1/events", BODY, format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 200
    assert response.json()["id"] == first["id"]
    assert counted["rabbitmq"] == 0
    purge_queues()
