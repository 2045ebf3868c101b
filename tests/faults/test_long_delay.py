"""A retry hours away survives a RabbitMQ restart and a worker restart."""

import pytest
from django.conf import settings as django_settings
from kombu import Connection

from deliveries.models import DeliveryStatus
from deliveries.receiver import WebhookReceiver
from tests.conftest import wait_until
from tests.deliveries.test_e2e_worker import (
    create_endpoint,
    final,
    publish,
)
from tests.faults import services
from webhooks_project.celery import app as celery_app
from webhooks_project.queues import DELIVERIES_QUEUE, RETRIES_QUEUE

pytestmark = [
    pytest.mark.faults,
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
]


def queue_depth(name: str) -> int:
    """Messages ready in a queue (held/unacknowledged ones are not counted)."""
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        _, ready, _ = conn.default_channel.queue_declare(name, passive=True)
        return ready


# "Hours" shortened: an 8 s retry against a 2 s broker maximum is kept in PostgreSQL.
ENV = {
    "WEBHOOK_RETRY_SCHEDULE": "8",
    "WEBHOOK_RETRY_JITTER": "0",
    "WEBHOOK_BROKER_COUNTDOWN_MAX": "2",
    "WEBHOOK_SWEEP_INTERVAL": "1",
}


@pytest.mark.timeout(300)
def test_long_retry_survives_rabbitmq_and_worker_restart(
    api, worker_factory, beat_factory
):
    worker = worker_factory(**ENV)
    with WebhookReceiver(statuses=[500, 200]) as receiver:
        create_endpoint(api, receiver.url)
        event = publish(api)
        failed = wait_until(final(event["id"], DeliveryStatus.FAILED))
        # then: the due time is in the database, not in a message or a worker
        assert failed.lease_expires_at == failed.next_attempt_at
        assert queue_depth(DELIVERIES_QUEUE) == queue_depth(RETRIES_QUEUE) == 0
        inspector = celery_app.control.inspect(destination=[worker.node], timeout=3)
        assert (inspector.scheduled() or {}).get(worker.node, []) == []
        assert (inspector.reserved() or {}).get(worker.node, []) == []
        # when: RabbitMQ stops and starts, and the worker is replaced meanwhile
        services.rabbitmq_stop()
        try:
            worker.stop()
        finally:
            services.rabbitmq_start()
        worker_factory(**ENV)
        beat_factory(**ENV)
        delivered = wait_until(final(event["id"], DeliveryStatus.SUCCEEDED), timeout=60)
        assert len(receiver.received) == 2
    # then: the second attempt ran when due, not earlier
    assert delivered.attempt_count == 2
    waited = receiver.received[1].received_at - receiver.received[0].received_at
    assert waited >= 7.5


@pytest.mark.timeout(300)
def test_worker_reconnects_after_rabbitmq_restart_without_restart(api, worker_factory):
    # given: a running worker
    worker_factory(WEBHOOK_SWEEP_INTERVAL="1")
    with WebhookReceiver() as receiver:
        create_endpoint(api, receiver.url)
        # when: RabbitMQ restarts under it, and an event is published afterwards
        services.rabbitmq_stop()
        services.rabbitmq_start()
        event = publish(api)
        # then: the same worker process consumes it once the broker is back
        wait_until(final(event["id"], DeliveryStatus.SUCCEEDED), timeout=90)
        assert [r.header("webhook-id") for r in receiver.received] == [event["id"]]
