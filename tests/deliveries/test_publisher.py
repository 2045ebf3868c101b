"""The batch publisher: ordinary Celery task messages, confirmed, with countdowns."""

import json
import time
import uuid

import pytest
from django.conf import settings
from kombu import Connection, Exchange, Queue
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
)

from deliveries.flow import isolation
from deliveries.publisher import Message, Publisher, PublishError
from tests.conftest import purge_queues
from webhooks_project.celery import app
from webhooks_project.queues import (
    QUEUE_PREFIX,
    RETRIES_QUEUE,
    TASK_QUEUES,
    endpoint_queue_name,
)


@pytest.fixture
def queues():
    purge_queues()
    yield
    purge_queues()


def take_all(queue: str, timeout: float = 5.0) -> list:
    messages = []
    with Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = channel.basic_get(queue, no_ack=True)
            if message is None:
                if messages:
                    break
                time.sleep(0.05)
                continue
            messages.append(message)
    return messages


@pytest.mark.parametrize("isolated", [True, False])
def test_publish_batch_is_celery_deliver_tasks_on_the_queue(queues, settings, isolated):
    ids = [str(uuid.uuid4()) for _ in range(50)]
    endpoint = str(uuid.uuid4())
    if isolated:
        isolation.isolate({endpoint: time.time() + 60})
    Publisher(app).publish([Message(i, endpoint) for i in ids])
    # in the endpoint's own queue, or the one shared queue of fresh deliveries
    shared = TASK_QUEUES[0].name
    messages = take_all(endpoint_queue_name(endpoint) if isolated else shared)
    assert len(messages) == 50
    first = messages[0]
    assert first.headers["task"] == "deliveries.deliver"
    assert first.properties["delivery_mode"] == 2  # persistent
    _, kwargs, _ = json.loads(first.body)
    assert kwargs == {"endpoint_id": endpoint}  # the engine's hint
    assert sorted(json.loads(m.body)[0][0] for m in messages) == sorted(ids)
    assert len({m.headers["id"] for m in messages}) == 50


def test_publish_with_countdown_waits_in_rabbitmq_until_due(queues):
    delivery_id = str(uuid.uuid4())
    Publisher(app).publish(
        [Message(delivery_id, countdown=2, retries=3)], queue=RETRIES_QUEUE
    )
    started = time.monotonic()
    assert take_all(RETRIES_QUEUE, timeout=1.0) == []
    [message] = take_all(RETRIES_QUEUE, timeout=10)
    assert time.monotonic() - started >= 1.0
    assert json.loads(message.body)[0] == [delivery_id]
    assert message.headers["retries"] == 3
    assert message.headers["eta"]


def test_countdowns_reach_no_queue_of_a_stack_without_the_prefix(queues):
    # given: a queue bound as a worker of a stack without this run's prefix
    # binds its retries queue (RabbitMQ's delayed-delivery exchanges are shared)
    other = f"other-{uuid.uuid4().hex}"
    exchange = Exchange(other, type="topic", durable=False, auto_delete=True)
    base = RETRIES_QUEUE.removeprefix(QUEUE_PREFIX)
    with Connection(settings.CELERY_BROKER_URL) as conn:
        queue = Queue(other, exchange, routing_key=base, exclusive=True)
        queue.bind(conn.channel()).declare()
        bind_queue_to_native_delayed_delivery_exchange(conn, queue)
        # when: this run publishes a retry with a countdown
        Publisher(app).publish(
            [Message(str(uuid.uuid4()), countdown=1)], queue=RETRIES_QUEUE
        )
        # then: it reaches this run's retries queue, not the other stack's
        assert len(take_all(RETRIES_QUEUE, timeout=10)) == 1
        assert conn.channel().queue_declare(other, passive=True).message_count == 0


def test_publish_to_unreachable_broker_raises(settings):
    unreachable = Publisher(app)
    unreachable.app = type("App", (), {"conf": app.conf, "amqp": app.amqp})()
    original = app.conf.broker_url
    app.conf.broker_url = "amqp://guest:guest@127.0.0.1:1//"
    try:
        with pytest.raises(PublishError):
            unreachable.publish([Message(str(uuid.uuid4()))])
    finally:
        app.conf.broker_url = original
