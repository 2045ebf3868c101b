"""Endpoints' own queues, paused while they refuse (WEBHOOK_ENDPOINT_QUEUES).

Only isolated endpoints (found refusing or full, or busy) get one; most tests
isolate theirs up front (`isolate`) to look at the queues themselves.
"""

import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from kombu import Connection

from deliveries import broker
from deliveries.flow import gate as flow_gate
from deliveries.flow import isolation, refusals
from deliveries.models import Delivery, DeliveryStatus
from deliveries.publisher import Message, publisher
from deliveries.receiver import WebhookReceiver
from deliveries.services.ingest import event_ingest
from deliveries.services.postponing import deliveries_postpone_queued
from deliveries.services.sweeps import deliveries_enqueue_due
from tests.conftest import purge_queues, wait_until
from tests.factories import make_endpoint, make_event
from tests.faults import services
from webhooks_project import metrics, redis_client
from webhooks_project.queues import (
    DELIVERIES_QUEUE,
    RETRIES_QUEUE,
    endpoint_queue_name,
)


def queue_state(name: str) -> tuple[int, int] | None:
    """(ready messages, consumers) of a queue; None if it does not exist."""
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        try:
            ok = conn.channel().queue_declare(name, passive=True)
        except conn.channel_errors:
            return None
        return ok.message_count, ok.consumer_count


def ready(name: str) -> int:
    state = queue_state(name)
    return state[0] if state else 0


# Tests that start workers ask for these first: set up before the workers,
# they are torn down after them (a queue deleted under a running worker's
# consumer makes it reconnect, and declare that queue again).
@pytest.fixture
def queues_on(settings):
    """Endpoint queues on (the default); queues and announcements dropped after."""
    settings.WEBHOOK_ENDPOINT_QUEUES = True
    purge_queues()
    yield
    purge_queues()


def isolate(*endpoint_ids) -> None:
    """Isolate endpoints for ten minutes: their fresh deliveries get a queue."""
    isolation.isolate({str(e): time.time() + 600 for e in endpoint_ids})


def isolated_now() -> frozenset[str]:
    refusals.forget()
    return refusals.isolated()


def test_fresh_deliveries_go_to_their_endpoints_queue_and_are_announced(queues_on):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    isolate(first, second)
    # when: fresh deliveries of two endpoints, a retry and one without endpoint
    publisher().publish(
        [Message(f"d{n}", first) for n in range(3)]
        + [Message("d3", second), Message("d4", None)]
    )
    publisher().publish([Message("r0", first, retries=1)], queue=RETRIES_QUEUE)
    # then: each endpoint's fresh ones wait in its own queue, the rest are shared
    assert ready(endpoint_queue_name(first)) == 3
    assert ready(endpoint_queue_name(second)) == 1
    assert ready(DELIVERIES_QUEUE) == 1
    assert ready(RETRIES_QUEUE) == 1
    # ... and the workers are told of both queues
    assert set(isolation.announced_since(time.time() - 60)) == {first, second}


def test_only_isolated_endpoints_get_a_queue_for_as_long_as_they_are(
    queues_on,
):
    troubled, healthy = str(uuid.uuid4()), str(uuid.uuid4())

    def publish(tag: str) -> None:
        publisher().publish(
            [Message(f"{tag}-t", troubled), Message(f"{tag}-h", healthy)]
        )

    # given: no endpoint isolated: one shared queue, nothing declared
    publish("before")
    assert ready(DELIVERIES_QUEUE) == 2
    assert queue_state(endpoint_queue_name(troubled)) is None
    # when: a worker isolates one for a minute (a later, shorter isolation
    # does not bring its end forward)
    isolation.isolate({troubled: time.time() + 60})
    isolation.isolate({troubled: time.time() + 0.2})
    time.sleep(0.5)
    publish("isolated")
    # then: its fresh deliveries go to its queue, announced; the other's do not
    assert ready(endpoint_queue_name(troubled)) == 1
    assert ready(DELIVERIES_QUEUE) == 3
    assert set(isolation.announced_since(time.time() - 60)) == {troubled}
    # ... nor do its retries
    publisher().publish([Message("r", troubled, retries=1)], queue=RETRIES_QUEUE)
    assert ready(RETRIES_QUEUE) == 1
    # when: it is released (its probe succeeded)
    isolation.release([troubled])
    publish("released")
    # then: shared again
    assert ready(endpoint_queue_name(troubled)) == 1
    assert ready(DELIVERIES_QUEUE) == 5
    # when: isolated for a moment only, which passes
    isolation.isolate({troubled: time.time() + 1})
    assert troubled in isolated_now()
    time.sleep(1.1)
    # then: it is no longer isolated, even for a process that looked just now
    time.sleep(refusals.REFUSALS_LIFETIME)
    assert refusals.isolated() == frozenset()
    publish("passed")
    assert ready(DELIVERIES_QUEUE) == 7


def test_busy_endpoint_gets_its_own_queue(monkeypatch, queues_on, settings):
    monkeypatch.setattr(isolation, "BUSY_RATE", 10)
    busy, quiet, retried = (str(uuid.uuid4()) for _ in range(3))
    # when: this process publishes 12 fresh deliveries for one endpoint at
    # once, 9 for another, and 20 delayed retries for a third
    publisher().publish(
        [Message(f"b{n}", busy) for n in range(12)]
        + [Message(f"q{n}", quiet) for n in range(9)]
        + [Message(f"r{n}", retried, countdown=60) for n in range(20)]
    )
    # then: the busy one is isolated, its deliveries in its own queue
    assert isolated_now() == {busy}
    assert ready(endpoint_queue_name(busy)) == 12
    assert ready(DELIVERIES_QUEUE) == 9
    assert queue_state(endpoint_queue_name(quiet)) is None
    assert queue_state(endpoint_queue_name(retried)) is None
    # ... for a while after
    until = redis_client.get_redis().zscore(isolation.ISOLATED_KEY, busy)
    assert until - time.time() > isolation.ISOLATE_LINGER - 5


def test_no_busy_rate_isolates_no_busy_endpoint(monkeypatch, queues_on, settings):
    monkeypatch.setattr(isolation, "BUSY_RATE", 0)
    busy = str(uuid.uuid4())
    publisher().publish([Message(f"b{n}", busy) for n in range(500)])
    assert isolated_now() == frozenset()
    assert ready(DELIVERIES_QUEUE) == 500


def test_delete_drops_endpoint_queues_with_their_announcements(queues_on):
    kept, dropped = str(uuid.uuid4()), str(uuid.uuid4())
    isolate(kept, dropped)
    publisher().publish(
        [Message("k", kept)] + [Message(f"d{n}", dropped) for n in range(3)]
    )
    # when: one endpoint's queue is deleted
    left = isolation.delete([dropped])
    # then: it said what the queue held; the queue, its announcement and its
    # isolation are gone; the other endpoint's are not
    assert left == {dropped: 3}
    assert queue_state(endpoint_queue_name(dropped)) is None
    assert set(isolation.announced_since(0)) == {kept}
    assert dropped not in isolated_now()
    assert ready(endpoint_queue_name(kept)) == 1


def test_publisher_declares_again_an_endpoint_queue_deleted_meanwhile(queues_on):
    endpoint = str(uuid.uuid4())
    isolate(endpoint)
    publisher().publish([Message("d0", endpoint)])
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        conn.channel().queue_delete(endpoint_queue_name(endpoint))
    # when: the same process publishes again, within its declarations' 30 s
    publisher().publish([Message("d1", endpoint)])
    # then: the message came back (mandatory), and went again to a new queue
    assert ready(endpoint_queue_name(endpoint)) == 1


def test_queues_off_keeps_one_shared_queue(settings):
    settings.WEBHOOK_ENDPOINT_QUEUES = False
    purge_queues()
    endpoint = str(uuid.uuid4())
    isolate(endpoint)
    publisher().publish([Message("d0", endpoint), Message("d1", endpoint)])
    assert ready(DELIVERIES_QUEUE) == 2
    assert queue_state(endpoint_queue_name(endpoint)) is None


@pytest.mark.parametrize("isolation_read", [True, False])
def test_without_redis_fresh_deliveries_go_to_the_shared_queue(
    queues_on, settings, monkeypatch, isolation_read
):
    endpoint = str(uuid.uuid4())
    isolate(endpoint)
    if isolation_read:  # the publisher read it just before Redis went away
        assert endpoint in isolated_now()
    # given: Redis unreachable, so no worker could learn of a new queue (nor,
    # without a reading, the publisher that the endpoint is isolated)
    real = settings.REDIS_URL
    monkeypatch.setattr(redis_client, "_client", None)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        publisher().publish([Message("d0", endpoint), Message("d1", endpoint)])
    finally:
        redis_client._client = None  # the next calls connect to the real one
        settings.REDIS_URL = real
    # then: its messages are in the queue every worker reads
    assert ready(DELIVERIES_QUEUE) == 2
    assert ready(endpoint_queue_name(endpoint)) == 0
    # (with a reading, declared before it could not be announced: dropped here)
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        conn.channel().queue_delete(endpoint_queue_name(endpoint))


@pytest.mark.django_db
def test_keep_queued_moves_on_only_queued_leases_about_to_pass(tenant, settings):
    settings.WEBHOOK_QUEUE_LEASE_SECONDS = 300
    endpoint = make_endpoint(tenant=tenant, event_types=["a.*"])
    other = make_endpoint(tenant=tenant, event_types=["b.*"])
    soon, later, put_off = (
        make_event(tenant=tenant, event_type="a.x")[1][0] for _ in range(3)
    )
    [elsewhere] = make_event(tenant=tenant, event_type="b.x")[1]
    assert elsewhere.endpoint_id == other.pk
    now = timezone.now()

    def lease(delivery, seconds, **fields):
        Delivery.objects.filter(pk=delivery.pk).update(
            lease_expires_at=now + timedelta(seconds=seconds), **fields
        )

    lease(soon, 20)
    lease(later, 200)
    lease(put_off, 20, next_attempt_at=now + timedelta(seconds=20))  # in PostgreSQL
    lease(elsewhere, 20)
    # when
    moved = deliveries_postpone_queued(endpoint_id=endpoint.pk, within=60)
    # then: only the queued one of that endpoint whose lease passes within a minute
    assert moved == 1
    left = {
        d.pk: (d.lease_expires_at - now).total_seconds()
        for d in Delivery.objects.filter(tenant=tenant)
    }
    assert left[soon.pk] >= 295
    assert 195 < left[later.pk] < 205
    assert left[put_off.pk] < 25
    assert left[elsewhere.pk] < 25


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_worker_reads_queues_announced_before_it_started_and_after(
    queues_on, tenant, worker_factory
):
    with WebhookReceiver() as receiver:
        before = make_endpoint(tenant=tenant, url=receiver.url, event_types=["a.*"])
        isolate(before.pk)
        # given: deliveries queued in their endpoint's queue with no worker running
        for n in range(5):
            event_ingest(tenant=tenant, event_type="a.x", payload={"n": n})
        assert ready(endpoint_queue_name(before.pk)) == 5
        # when: a worker starts
        worker_factory()
        succeeded = Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED)
        # then: it reads that queue
        wait_until(lambda: succeeded.filter(endpoint=before).count() == 5)
        # when: an endpoint created while it runs gets its first events
        after = make_endpoint(tenant=tenant, url=receiver.url, event_types=["b.*"])
        isolate(after.pk)
        for n in range(5):
            event_ingest(tenant=tenant, event_type="b.x", payload={"n": n})
        # then: they come through its new queue within seconds
        wait_until(lambda: succeeded.filter(endpoint=after).count() == 5, timeout=10)
    for endpoint in (before, after):
        assert queue_state(endpoint_queue_name(endpoint.pk)) == (0, 1)
    assert len(receiver.received) == 10


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_dying_endpoints_backlog_waits_in_its_paused_queue_then_is_delivered(
    queues_on, tenant, worker_factory, beat_factory
):
    # given: a backlog queued for an endpoint that then hangs, beside a healthy one
    with WebhookReceiver(delay=30) as hanging, WebhookReceiver() as healthy:
        dying = make_endpoint(tenant=tenant, url=hanging.url, event_types=["slow.*"])
        isolate(dying.pk)
        make_endpoint(tenant=tenant, url=healthy.url, event_types=["fast.*"])
        for n in range(1000):
            event_ingest(tenant=tenant, event_type="slow.thing", payload={"n": n})
        for n in range(40):
            event_ingest(tenant=tenant, event_type="fast.thing", payload={"n": n})
        # when: a worker runs; the hanging requests time out and open its circuit
        worker_factory(
            WEBHOOK_RESPONSE_TIMEOUT="2",
            WEBHOOK_BREAKER_FAILURES="5",
            WEBHOOK_BREAKER_COOLDOWN="10",
            WEBHOOK_BREAKER_MAX_COOLDOWN="10",
            WEBHOOK_RETRY_SCHEDULE="1",
        )
        beat_factory(WEBHOOK_SWEEP_INTERVAL="1")  # brings back what was put off
        fast = Delivery.objects.filter(tenant=tenant, event__event_type="fast.thing")
        wait_until(
            lambda: fast.filter(status=DeliveryStatus.SUCCEEDED).count() == 40,
            timeout=30,
        )
        wait_until(lambda: flow_gate.circuit(dying.pk)["state"] != "closed")
        # then: the worker stopped reading the dying endpoint's queue, where most
        # of its backlog still waits (what it had taken was put off)
        name = endpoint_queue_name(dying.pk)
        wait_until(lambda: queue_state(name)[1] == 0, timeout=5)
        assert ready(name) >= 500
        # when: the endpoint answers again
        hanging.set_delay(0)
        slow = Delivery.objects.filter(endpoint=dying)
        # then: its whole backlog is delivered, none lost
        wait_until(
            lambda: slow.filter(status=DeliveryStatus.SUCCEEDED).count() == 1000,
            timeout=120,
        )
    assert ready(name) == 0
    assert {r.header("webhook-id") for r in hanging.received} >= {
        str(event_id) for event_id in slow.values_list("event_id", flat=True)
    }


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_full_endpoint_is_isolated_its_new_deliveries_wait_in_its_paused_queue(
    queues_on, tenant, worker_factory, beat_factory
):
    # (An endpoint refusing every delivery has its new deliveries held unpublished
    # at ingestion: tests/deliveries/test_holding.py. A full one has them published.)
    with WebhookReceiver(delay=0.25) as slow, WebhookReceiver() as healthy:
        full = make_endpoint(
            tenant=tenant, url=slow.url, event_types=["slow.*"], max_in_flight=2
        )
        make_endpoint(tenant=tenant, url=healthy.url, event_types=["fast.*"])
        name = endpoint_queue_name(full.pk)
        # given: a worker with the defaults, and more deliveries than an endpoint
        # taking 8 a second can take within a second
        worker = worker_factory()
        beat_factory(WEBHOOK_SWEEP_INTERVAL="1")  # brings back what was put off
        for n in range(60):
            event_ingest(tenant=tenant, event_type="slow.thing", payload={"n": n})
        # then: it is isolated (its first deliveries came through the shared queue)
        wait_until(lambda: str(full.pk) in isolated_now(), timeout=20)
        # when: more events come for it, and for a healthy endpoint
        for n in range(100):
            event_ingest(tenant=tenant, event_type="slow.thing", payload={"n": n})
        for n in range(40):
            event_ingest(tenant=tenant, event_type="fast.thing", payload={"n": n})
        # then: the healthy ones are delivered at once through the shared queue,
        # while the full endpoint's new ones wait in its queue, which the worker
        # took up paused
        fast = Delivery.objects.filter(tenant=tenant, event__event_type="fast.thing")
        wait_until(
            lambda: fast.filter(status=DeliveryStatus.SUCCEEDED).count() == 40,
            timeout=10,
        )
        # (at least: a delivery of the first 60 put off for less than a second
        # is fresh to the sweep, which publishes it there too)
        waiting, consumers = queue_state(name)
        assert waiting >= 100
        assert consumers == 0
        assert f"Started consuming from {name}".encode() not in worker.log_since(0)
        # ... and then, as the endpoint has room, all of them are delivered
        slow_ones = Delivery.objects.filter(endpoint=full)
        wait_until(
            lambda: slow_ones.filter(status=DeliveryStatus.SUCCEEDED).count() == 160,
            timeout=120,
        )
    assert ready(name) == 0
    assert len({r.header("webhook-id") for r in slow.received}) == 160


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_refusing_endpoint_is_isolated_until_its_probe_succeeds(
    queues_on, tenant, worker_factory, beat_factory
):
    with WebhookReceiver(delay=30) as hanging:
        endpoint = make_endpoint(tenant=tenant, url=hanging.url)
        # given: an endpoint that hangs until its circuit opens
        worker_factory(
            WEBHOOK_RESPONSE_TIMEOUT="2",
            WEBHOOK_BREAKER_FAILURES="3",
            WEBHOOK_BREAKER_COOLDOWN="5",
            WEBHOOK_BREAKER_MAX_COOLDOWN="5",
            WEBHOOK_RETRY_SCHEDULE="1",
        )
        beat_factory(WEBHOOK_SWEEP_INTERVAL="1")
        for _ in range(10):
            make_event(tenant=tenant)
        # then: refused, it is isolated for a minute past its pause
        wait_until(lambda: str(endpoint.pk) in isolated_now(), timeout=30)
        # when: it answers again
        hanging.set_delay(0)
        # then: its probe succeeds after the cooldown, which ends the isolation
        # then and there, long before it would lapse
        wait_until(
            lambda: str(endpoint.pk) not in isolated_now(),
            timeout=isolation.ISOLATE_LINGER / 2,
        )
        deliveries = Delivery.objects.filter(endpoint=endpoint)
        wait_until(
            lambda: deliveries.filter(status=DeliveryStatus.SUCCEEDED).count() == 10,
            timeout=60,
        )


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_worker_holds_at_most_the_endpoint_queue_prefetch(
    queues_on, tenant, worker_factory
):
    # given: a worker that may hold 3 messages of an endpoint's queue, and
    # deliveries that take 2 s each
    worker_factory(WEBHOOK_ENDPOINT_QUEUE_PREFETCH="3")
    with WebhookReceiver(delay=2) as receiver:
        endpoint = make_endpoint(tenant=tenant, url=receiver.url)
        isolate(endpoint.pk)
        name = endpoint_queue_name(endpoint.pk)
        make_event(tenant=tenant)  # its queue is announced, then read
        wait_until(lambda: queue_state(name) == (0, 1))
        # when: 20 more are published
        for _ in range(20):
            make_event(tenant=tenant)
        # then: the worker took 3 of them (not its 8 x 4 of the shared queues)
        wait_until(lambda: len(receiver.received) >= 3, timeout=10)
        assert ready(name) >= 17 - 1  # the first one's slot may be free again
        wait_until(lambda: len(receiver.received) == 21, timeout=60)


@pytest.mark.faults
@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.django_db(transaction=True)
def test_worker_reads_endpoint_queues_again_after_rabbitmq_restarts(
    queues_on, tenant, worker_factory
):
    # given: a worker reading an endpoint's queue, 3 messages at a time
    worker = worker_factory(WEBHOOK_ENDPOINT_QUEUE_PREFETCH="3")
    with WebhookReceiver() as receiver:
        endpoint = make_endpoint(tenant=tenant, url=receiver.url)
        isolate(endpoint.pk)
        make_event(tenant=tenant)
        wait_until(lambda: len(receiver.received) == 1)
        name = endpoint_queue_name(endpoint.pk)
        assert queue_state(name) == (0, 1)
        # when: RabbitMQ restarts under it
        services.rabbitmq_stop()
        services.rabbitmq_start()
        # then: the worker consumes that queue again (it outlived the restart),
        # with its own prefetch again, and what is published afterwards is
        # delivered through it
        wait_until(lambda: queue_state(name) == (0, 1), timeout=60)
        # (Celery consumes it again first, with its own prefetch; then the
        # worker takes that consumer's place with one of its own)
        started = f"Started consuming from {name}".encode()
        wait_until(lambda: worker.log_since(0).count(started) == 2, timeout=10)
        receiver.set_delay(2)
        for _ in range(10):
            make_event(tenant=tenant)
        wait_until(lambda: len(receiver.received) >= 4, timeout=10)
        assert ready(name) >= 6
        wait_until(lambda: len(receiver.received) == 11, timeout=60)


def test_queue_backlog_counts_the_given_endpoints_queues(queues_on):
    busy, unknown, other = (str(uuid.uuid4()) for _ in range(3))
    isolate(busy, other)
    publisher().publish([Message(f"d{n}", busy) for n in range(4)])
    # a queue that does not exist counts nothing (and closes no more than a channel)
    assert broker.queue_backlog([unknown, busy]) == 4
    assert broker.queue_backlog() == 0
    # the gauge's `endpoints` series: every announced endpoint queue
    publisher().publish([Message("e0", other)])
    assert broker.endpoint_queues_backlog() == 5
    assert metrics.QUEUE_DEPTH.labels(queue="endpoints")._value.get() == 5


@pytest.mark.django_db
def test_sweep_leaves_a_row_waiting_behind_its_endpoints_queue(
    tenant, queues_on, settings, django_capture_on_commit_callbacks
):
    # given: a fresh row queued 10 minutes ago whose lease passed
    settings.WEBHOOK_QUEUE_LEASE_SECONDS = 300
    endpoint = make_endpoint(tenant=tenant)
    isolate(endpoint.pk)
    _, [delivery] = make_event(tenant=tenant)

    def overdue():
        now = timezone.now()
        Delivery.objects.filter(pk=delivery.pk).update(
            next_attempt_at=now - timedelta(minutes=10),
            lease_expires_at=now - timedelta(seconds=1),
        )

    overdue()
    # when: its endpoint's queue still holds a backlog
    publisher().publish([Message(f"other-{n}", str(endpoint.pk)) for n in range(3)])
    # then: not published again
    assert deliveries_enqueue_due().enqueued == 0
    # when: that queue is empty (its message was lost)
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        conn.channel().queue_purge(endpoint_queue_name(endpoint.pk))
    overdue()
    # then: it is published again, to its endpoint's queue
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_enqueue_due().enqueued == 1
    assert ready(endpoint_queue_name(endpoint.pk)) == 1
