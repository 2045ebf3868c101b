"""Endpoint windows: at most so many messages of one endpoint in the broker."""

import time
import uuid
from collections import Counter

import pytest
from django.conf import settings as django_settings
from kombu import Connection

from deliveries import flowcontrol, window
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from deliveries.publisher import Message, publisher
from deliveries.receiver import WebhookReceiver
from deliveries.services.endpoint_health import endpoint_deactivate
from deliveries.services.enqueue import deliveries_publish
from deliveries.services.ingest import event_ingest
from tests.conftest import fresh_queues, purge_queues, wait_until
from tests.factories import make_endpoint, make_tenant
from webhooks_project import redis_client
from webhooks_project.celery import app
from webhooks_project.queues import DELIVERIES_QUEUE, RETRIES_QUEUE


def messages(endpoint_id: str, count: int) -> list[Message]:
    return [Message(f"delivery-{n}", endpoint_id) for n in range(count)]


def ids(admitted) -> list[str]:
    return [message.delivery_id for _, message in admitted]


def ready_messages(*queues: str) -> int:
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        return sum(
            channel.queue_declare(name, passive=True).message_count for name in queues
        )


def test_window_publishes_what_fits_and_the_rest_follows_in_order(settings):
    settings.WEBHOOK_ENDPOINT_WINDOW = 3
    endpoint = str(uuid.uuid4())
    # when: five messages of one endpoint are published
    now = window.admit(messages(endpoint, 5), queue=DELIVERIES_QUEUE)
    # then: three go to the broker, two wait
    assert ids(now) == ["delivery-0", "delivery-1", "delivery-2"]
    assert window.state(endpoint) == {"in_broker": 3, "waiting": 2}
    # when: two are settled after attempts
    following = window.release(Counter({endpoint: 2}), refill={endpoint})
    # then: the two waiting follow, oldest first, to the queue they were meant for
    assert following == [
        (DELIVERIES_QUEUE, Message("delivery-3", endpoint)),
        (DELIVERIES_QUEUE, Message("delivery-4", endpoint)),
    ]
    assert window.state(endpoint) == {"in_broker": 3, "waiting": 0}


def test_window_new_messages_queue_behind_those_waiting(settings):
    settings.WEBHOOK_ENDPOINT_WINDOW = 2
    endpoint = str(uuid.uuid4())
    window.admit(messages(endpoint, 3), queue=DELIVERIES_QUEUE)
    # given: one settled without an attempt (put off): room, nothing follows
    assert window.release(Counter({endpoint: 1})) == []
    # when: a retry of another delivery is published
    now = window.admit([Message("retried", endpoint)], queue=RETRIES_QUEUE)
    # then: the one that waited takes the room; the retry waits behind it
    assert now == [(DELIVERIES_QUEUE, Message("delivery-2", endpoint))]
    assert window.release(Counter({endpoint: 1}), refill={endpoint}) == [
        (RETRIES_QUEUE, Message("retried", endpoint))
    ]


def test_window_publishing_again_what_waits_keeps_one_entry(settings):
    settings.WEBHOOK_ENDPOINT_WINDOW = 1
    endpoint = str(uuid.uuid4())
    window.admit(messages(endpoint, 3), queue=DELIVERIES_QUEUE)
    # when: the sweep publishes the waiting rows again (their leases passed)
    assert window.admit(messages(endpoint, 3)[1:], queue=DELIVERIES_QUEUE) == []
    # then: each waits once
    assert window.state(endpoint)["waiting"] == 2


def test_window_refusing_endpoint_gets_nothing_more(settings):
    settings.WEBHOOK_ENDPOINT_WINDOW = 2
    endpoint = str(uuid.uuid4())
    window.admit(messages(endpoint, 5), queue=DELIVERIES_QUEUE)
    # given: the endpoint refuses every delivery for a minute (its circuit opened)
    redis_client.get_redis().zadd(
        flowcontrol.REFUSING_SET, {endpoint: (time.time() + 60) * 1000}
    )
    # when: its two messages are settled after (failed) attempts
    assert window.release(Counter({endpoint: 2}), refill={endpoint}) == []
    # then: the room stays free, the rest waits
    assert window.state(endpoint) == {"in_broker": 0, "waiting": 3}


def test_window_waiting_beyond_the_most_is_published(settings):
    settings.WEBHOOK_ENDPOINT_WINDOW = 1
    settings.WEBHOOK_ENDPOINT_WINDOW_WAITING_MAX = 2
    endpoint = str(uuid.uuid4())
    assert len(window.admit(messages(endpoint, 3), queue=DELIVERIES_QUEUE)) == 1
    # when: two wait already
    now = window.admit([Message("more", endpoint)], queue=DELIVERIES_QUEUE)
    # then: Redis keeps no more; the broker takes it
    assert ids(now) == ["more"]
    assert window.state(endpoint) == {"in_broker": 2, "waiting": 2}


def test_window_countdowns_and_messages_without_endpoint_are_not_windowed(settings):
    settings.WEBHOOK_ENDPOINT_WINDOW = 1
    endpoint = str(uuid.uuid4())
    later = [Message(f"later-{n}", endpoint, countdown=5) for n in range(3)]
    unknown = [Message("unknown", None)]
    now = window.admit(later + unknown, queue=RETRIES_QUEUE)
    assert len(now) == 4
    assert window.state(endpoint) == {"in_broker": 0, "waiting": 0}


def test_window_without_redis_publishes_everything(settings, monkeypatch):
    settings.WEBHOOK_ENDPOINT_WINDOW = 1
    monkeypatch.setattr(redis_client, "_client", None)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        now = window.admit(messages(str(uuid.uuid4()), 3), queue=DELIVERIES_QUEUE)
        assert len(now) == 3
        assert window.release(Counter({"x": 1}), refill={"x"}) == []
    finally:
        redis_client._client = None  # the next test connects to the real one


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_window_backlog_waits_in_redis_and_is_delivered_in_full(
    tenant, worker_factory, settings, pool
):
    settings.WEBHOOK_ENDPOINT_WINDOW = 5
    purge_queues()
    with WebhookReceiver() as first, WebhookReceiver() as second:
        endpoints = [
            make_endpoint(tenant=tenant, url=first.url),
            make_endpoint(tenant=tenant, url=second.url),
        ]
        # when: 30 events are accepted with no worker running
        for n in range(30):
            event_ingest(tenant=tenant, event_type="order.created", payload={"n": n})
        # then: five of each endpoint are in the broker, the rest wait in Redis
        assert ready_messages(*fresh_queues(), RETRIES_QUEUE) == 10
        for endpoint in endpoints:
            assert window.state(endpoint.pk) == {"in_broker": 5, "waiting": 25}
        # when: a worker drains them
        # (prefork runs each message as one task, outside the delivery engine)
        worker_factory(pool=pool, WEBHOOK_ENDPOINT_WINDOW="5")
        delivered = Delivery.objects.filter(
            tenant=tenant, status=DeliveryStatus.SUCCEEDED
        )
        wait_until(lambda: delivered.count() == 60, timeout=60)
        # then: every delivery arrived once, and the windows are empty again
        assert len(first.received) == len(second.received) == 30
        wait_until(
            lambda: all(
                window.state(e.pk) == {"in_broker": 0, "waiting": 0} for e in endpoints
            )
        )


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_window_keeps_a_dying_endpoints_backlog_out_of_the_broker(
    tenant, worker_factory, settings
):
    # given: a backlog queued for an endpoint that then hangs, beside a healthy one
    settings.WEBHOOK_ENDPOINT_WINDOW = 5
    purge_queues()
    with WebhookReceiver(delay=30) as hanging, WebhookReceiver() as healthy:
        dying = make_endpoint(tenant=tenant, url=hanging.url, event_types=["slow.*"])
        make_endpoint(tenant=tenant, url=healthy.url, event_types=["fast.*"])
        for n in range(40):
            event_ingest(tenant=tenant, event_type="slow.thing", payload={"n": n})
            event_ingest(tenant=tenant, event_type="fast.thing", payload={"n": n})
        # when: a worker runs; the hanging requests time out and open its circuit
        worker_factory(
            WEBHOOK_ENDPOINT_WINDOW="5",
            WEBHOOK_RESPONSE_TIMEOUT="2",
            WEBHOOK_BREAKER_FAILURES="5",
            WEBHOOK_BREAKER_COOLDOWN="60",
        )
        fast = Delivery.objects.filter(tenant=tenant, event__event_type="fast.thing")
        wait_until(
            lambda: fast.filter(status=DeliveryStatus.SUCCEEDED).count() == 40,
            timeout=30,
        )
        wait_until(lambda: flowcontrol.circuit(dying.pk)["state"] == "open")
        time.sleep(1)  # what its failures released would have been sent by now
    # then: one window's worth reached the endpoint and no more; the rest waits
    assert DeliveryAttempt.objects.filter(delivery__endpoint=dying).count() == 5
    assert window.state(dying.pk)["waiting"] == 35
    assert not Delivery.objects.filter(endpoint=dying).exclude(
        status__in=(DeliveryStatus.PENDING, DeliveryStatus.FAILED)
    )


def test_window_keeps_a_fan_outs_order_and_takes_waiting_endpoints_in_turn(settings):
    settings.WEBHOOK_ENDPOINT_WINDOW = 2
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    # when: two events fanned out to both endpoints, as ingestion publishes them
    fan_out = [Message(f"{e}-{n}", e) for n in range(2) for e in (first, second)]
    now = window.admit(fan_out, queue=DELIVERIES_QUEUE)
    # then: they go in the order given, endpoints interleaved
    assert [message for _, message in now] == fan_out
    # when: two more each wait, and both windows empty after attempts
    window.admit(
        [Message(f"{e}-{n}", e) for e in (first, second) for n in (2, 3)],
        queue=DELIVERIES_QUEUE,
    )
    following = window.release(Counter({first: 2, second: 2}), refill={first, second})
    # then: what follows comes in each endpoint's order, and the engine's
    # refiller publishes it with the endpoints taken in turn
    assert ids(following) == [f"{first}-2", f"{first}-3", f"{second}-2", f"{second}-3"]
    assert ids(window.interleaved(following)) == [
        f"{first}-2",
        f"{second}-2",
        f"{first}-3",
        f"{second}-3",
    ]


@pytest.mark.django_db
def test_window_room_of_messages_the_broker_refused_is_given_back(settings):
    settings.WEBHOOK_ENDPOINT_WINDOW = 2
    endpoint = make_endpoint(tenant=make_tenant(), url="http://127.0.0.1:9/")
    rows = [Message(str(uuid.uuid4()), str(endpoint.pk)) for _ in range(3)]
    # given: RabbitMQ unreachable
    original = app.conf.broker_url
    app.conf.broker_url = "amqp://guest:guest@127.0.0.1:1//"
    publisher()._drop()
    try:
        # when: three are published, two fitting the window
        assert deliveries_publish(rows, queue=DELIVERIES_QUEUE) == 0
    finally:
        app.conf.broker_url = original
        publisher()._drop()
    # then: the two count no more (the sweep publishes them), the third waits
    assert window.state(endpoint.pk) == {"in_broker": 0, "waiting": 1}


@pytest.mark.django_db
def test_window_of_a_disabled_endpoint_is_dropped(settings):
    settings.WEBHOOK_ENDPOINT_WINDOW = 1
    endpoint = make_endpoint(tenant=make_tenant(), url="http://127.0.0.1:9/")
    window.admit(messages(str(endpoint.pk), 3), queue=DELIVERIES_QUEUE)
    # when: it is disabled (its waiting deliveries are dead-lettered)
    endpoint_deactivate(endpoint_id=endpoint.pk, reason="gone")
    # then: nothing of it is left waiting in Redis
    assert window.state(endpoint.pk) == {"in_broker": 0, "waiting": 0}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_window_retry_keeps_its_place_in_the_window(tenant, worker_factory, settings):
    # given: a window of one, and a receiver failing the first attempt of each
    settings.WEBHOOK_ENDPOINT_WINDOW = 1
    purge_queues()
    with WebhookReceiver(statuses=[500, 200] * 3) as receiver:
        make_endpoint(tenant=tenant, url=receiver.url)
        events = [
            str(
                event_ingest(
                    tenant=tenant, event_type="order.created", payload={"n": n}
                ).event.pk
            )
            for n in range(3)
        ]
        # when: a worker delivers them
        worker_factory(WEBHOOK_ENDPOINT_WINDOW="1", WEBHOOK_RETRY_SCHEDULE="1")
        wait_until(lambda: len(receiver.received) == 6, timeout=60)
    # then: the next delivery went only once the retry of the one before had
    # succeeded: the retry's message held the window's one place meanwhile
    assert [r.header("webhook-id") for r in receiver.received] == [
        event for event in events for _ in (1, 2)
    ]
