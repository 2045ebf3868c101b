"""The delivery engine in real threads-pool workers: batches, caps, shutdown, pools."""

import os
import time

import pytest
from django.conf import settings
from kombu import Connection
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from deliveries.flow import gate as flow_gate
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from deliveries.receiver import WebhookReceiver
from deliveries.services.ingest import event_ingest
from tests import gate_calls
from tests.conftest import needs_shared_metrics, wait_until
from tests.factories import make_endpoint
from webhooks_project.queues import DELIVERIES_QUEUE, RETRIES_QUEUE

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def publish(tenant, count: int, event_type: str = "order.created") -> list[str]:
    return [
        str(
            event_ingest(
                tenant=tenant, event_type=event_type, payload={"n": n}
            ).event.pk
        )
        for n in range(count)
    ]


def all_final(tenant, expected: int, timeout: float = 30) -> None:
    def check():
        return (
            Delivery.objects.filter(
                tenant=tenant,
                status__in=(DeliveryStatus.SUCCEEDED, DeliveryStatus.DEAD_LETTER),
            ).count()
            == expected
        )

    wait_until(check, timeout=timeout)


def ready_messages(*queues: str) -> int:
    with Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        return sum(
            channel.queue_declare(name, passive=True).message_count for name in queues
        )


def postponed(reason: str) -> float:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "webhook_deliveries_postponed"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("reason") == reason
    )


def test_engine_burst_to_three_endpoints_delivers_each_once(tenant, worker_factory):
    # given: a backlog waiting before the worker starts (one batch after another)
    receivers = [WebhookReceiver().start() for _ in range(3)]
    try:
        for receiver in receivers:
            make_endpoint(tenant=tenant, url=receiver.url)
        events = publish(tenant, 100)
        # when
        worker_factory()
        all_final(tenant, 300)
        time.sleep(0.5)  # anything sent twice would have arrived by now
    finally:
        for receiver in receivers:
            receiver.stop()
    # then: every receiver saw every event exactly once, one attempt each
    for receiver in receivers:
        ids = [request.header("webhook-id") for request in receiver.received]
        assert sorted(ids) == sorted(events)
    assert set(
        Delivery.objects.filter(tenant=tenant).values_list("status", "attempt_count")
    ) == {(DeliveryStatus.SUCCEEDED, 1)}
    assert DeliveryAttempt.objects.filter(delivery__tenant=tenant).count() == 300
    # and every message was acknowledged: nothing waits to be delivered again
    assert ready_messages(DELIVERIES_QUEUE, RETRIES_QUEUE) == 0


@needs_shared_metrics
def test_engine_endpoint_at_its_cap_waits_in_the_worker_not_the_broker(
    tenant, worker_factory
):
    # A lane holds what its endpoint clears in PARK_WAIT_MAX (2 s): at two in
    # flight and 100 ms a request, some 40, so the ten that wait fit with room
    # for a loaded machine's slower answers (16 at 200 ms did not, sometimes).
    before = postponed("concurrency")
    worker_factory(WEBHOOK_ENDPOINT_MAX_IN_FLIGHT="2")
    with WebhookReceiver(delay=0.1) as receiver:
        make_endpoint(tenant=tenant, url=receiver.url)
        started = time.monotonic()
        publish(tenant, 12)
        all_final(tenant, 12)
        elapsed = time.monotonic() - started
        assert receiver.max_in_flight == 2
    # six rounds of two at 100 ms, none sent through the delayed queues and back
    assert 0.6 <= elapsed < 6
    assert postponed("concurrency") == before
    assert set(
        Delivery.objects.filter(tenant=tenant).values_list("status", "attempt_count")
    ) == {(DeliveryStatus.SUCCEEDED, 1)}


def test_engine_keeps_an_endpoints_own_cap(tenant, worker_factory):
    worker_factory()  # the server's default cap, 20
    with WebhookReceiver(delay=0.3) as receiver:
        # given: an endpoint whose own cap is 1, with a backlog
        make_endpoint(tenant=tenant, url=receiver.url, max_in_flight=1)
        publish(tenant, 8)
        all_final(tenant, 8)
        # then: one request at a time, none spent on waiting
        assert receiver.max_in_flight == 1
    assert set(
        Delivery.objects.filter(tenant=tenant).values_list("status", "attempt_count")
    ) == {(DeliveryStatus.SUCCEEDED, 1)}


def test_engine_hanging_endpoint_does_not_hold_back_the_others(tenant, worker_factory):
    worker_factory(WEBHOOK_RESPONSE_TIMEOUT="6", WEBHOOK_ENDPOINT_MAX_IN_FLIGHT="3")
    with (
        WebhookReceiver(delay=30) as hanging,
        WebhookReceiver() as healthy,
    ):
        make_endpoint(tenant=tenant, url=hanging.url, event_types=["slow.*"])
        make_endpoint(tenant=tenant, url=healthy.url, event_types=["fast.*"])
        # interleaved, as they would arrive
        for _ in range(30):
            publish(tenant, 1, "slow.thing")
            publish(tenant, 1, "fast.thing")
        fast = Delivery.objects.filter(tenant=tenant, event__event_type="fast.thing")
        started = time.monotonic()
        wait_until(
            lambda: fast.filter(status=DeliveryStatus.SUCCEEDED).count() == 30,
            timeout=10,
        )
        # then: all healthy deliveries done while the hanging ones still hang
        assert time.monotonic() - started < 5
        assert hanging.max_in_flight <= 3
        assert len(healthy.received) == 30


@needs_shared_metrics
def test_engine_stalled_endpoint_backlog_leaves_the_worker_before_it_hangs(
    tenant, worker_factory
):
    # given: an endpoint that used to answer in 5 ms and now never answers, at
    # its cap of 2, and 40 deliveries queued: what the worker holds of the
    # other 38 waits in its lot, behind the cap (8 threads: 32 in hand)
    before = postponed("stalled")
    worker_factory(WEBHOOK_ENDPOINT_MAX_IN_FLIGHT="2")
    with WebhookReceiver(delay=30) as hanging:
        endpoint = make_endpoint(tenant=tenant, url=hanging.url)
        [usual] = flow_gate.enter_many([(endpoint.pk, None)])
        gate_calls.leave(
            endpoint_id=endpoint.pk, token=usual.token, succeeded=True, duration_ms=5
        )
        publish(tenant, 40)
        assert hanging.wait_for(2, timeout=15)
        out_at = hanging.received[0].received_at
        deliveries = Delivery.objects.filter(tenant=tenant)
        # when: its requests have been out for over 250 ms (stalled), before
        # the second after which it would be called hanging
        wait_until(
            lambda: deliveries.filter(status=DeliveryStatus.IN_PROGRESS).count() == 2,
            timeout=10,
            interval=0.02,
        )
        elapsed = time.time() - out_at
        # then: all but its two requests left the worker, put off (pending,
        # unclaimed) without waiting for it to be called hanging
        assert elapsed < 0.9
        assert postponed("stalled") > before
        assert deliveries.filter(status=DeliveryStatus.PENDING).count() == 38
        assert hanging.max_in_flight == 2


def test_engine_warm_shutdown_finishes_and_records_attempts_in_flight(
    tenant, worker_factory
):
    worker = worker_factory()
    with WebhookReceiver(delay=2) as receiver:
        make_endpoint(tenant=tenant, url=receiver.url)
        events = publish(tenant, 5)
        assert receiver.wait_for(5, timeout=15)
        # when: SIGTERM while all five requests are still in flight
        worker.stop()
        # then: they were finished, recorded and acknowledged before it exited
        assert set(
            Delivery.objects.filter(tenant=tenant).values_list(
                "status", "attempt_count"
            )
        ) == {(DeliveryStatus.SUCCEEDED, 1)}
        worker_factory()
        time.sleep(2)
        ids = [request.header("webhook-id") for request in receiver.received]
    assert sorted(ids) == sorted(events)
    assert ready_messages(DELIVERIES_QUEUE, RETRIES_QUEUE) == 0


def test_engine_retries_go_through_the_broker_countdown(tenant, worker_factory):
    worker_factory(WEBHOOK_RETRY_SCHEDULE="2")
    with WebhookReceiver(statuses=[500, 200]) as receiver:
        make_endpoint(tenant=tenant, url=receiver.url)
        publish(tenant, 1)
        all_final(tenant, 1, timeout=20)
        first, second = (request.received_at for request in receiver.received)
    # 2 s ± 20 % jitter, in whole seconds of native delayed delivery
    assert 1.0 <= second - first < 6
    assert Delivery.objects.get(tenant=tenant).attempt_count == 2


def test_prefork_worker_runs_each_message_as_a_task(tenant, worker_factory):
    worker_factory(pool="prefork")
    with WebhookReceiver() as receiver:
        make_endpoint(tenant=tenant, url=receiver.url)
        events = publish(tenant, 10)
        all_final(tenant, 10)
        ids = [request.header("webhook-id") for request in receiver.received]
    assert sorted(ids) == sorted(events)


def test_engine_puts_off_an_open_circuits_backlog_until_it_may_reopen(
    tenant, worker_factory
):
    # given: an endpoint whose circuit is open for the next 30 s
    with WebhookReceiver() as receiver:
        endpoint = make_endpoint(tenant=tenant, url=receiver.url)
        for _ in range(settings.WEBHOOK_BREAKER_FAILURES):
            gate = gate_calls.enter(endpoint_id=endpoint.pk, rate_limit=None)
            gate_calls.leave(
                endpoint_id=endpoint.pk,
                token=gate.token,
                succeeded=False,
                duration_ms=10,
            )
        opens_again = flow_gate.circuit(endpoint.pk)["open_until_ms"] / 1000
        worker_factory()
        # when: its deliveries arrive
        publish(tenant, 30)
        waiting = Delivery.objects.filter(tenant=tenant)
        wait_until(
            lambda: all(
                d.next_attempt_at and d.next_attempt_at.timestamp() > time.time() + 5
                for d in waiting.all()
            ),
            timeout=15,
        )
        # then: none was attempted; each waits, unclaimed, for the circuit
        assert receiver.received == []
    for delivery in waiting.all():
        assert delivery.status == DeliveryStatus.PENDING
        assert delivery.attempt_count == 0
        assert delivery.lease_expires_at == delivery.next_attempt_at
        assert delivery.next_attempt_at.timestamp() >= opens_again - 1
    assert ready_messages(DELIVERIES_QUEUE, RETRIES_QUEUE) == 0
