"""Deliveries of endpoints that refuse everything wait in PostgreSQL, unpublished."""

import json
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from kombu import Connection

from deliveries.flow import gate as flow_gate
from deliveries.flow import refusals
from deliveries.models import Delivery, DeliveryStatus
from deliveries.services import sweeps
from deliveries.services.endpoint_health import endpoint_reactivate
from deliveries.services.sweeps import deliveries_enqueue_due
from tests import gate_calls
from tests.conftest import fresh_queues, purge_queues
from tests.factories import make_endpoint, make_event, make_tenant
from webhooks_project import metrics
from webhooks_project.queues import DELIVERIES_QUEUE, RETRIES_QUEUE

pytestmark = pytest.mark.django_db


def refusing_now() -> dict:
    """The refusing endpoints as Redis has them now, not a reading a second old."""
    refusals.forget()
    return refusals.refusing()


def open_circuit(endpoint_id, settings, *, cooldown: float = 60):
    """Open the endpoint's circuit as failed attempts do; when it opened."""
    settings.WEBHOOK_BREAKER_FAILURES = 2
    settings.WEBHOOK_BREAKER_COOLDOWN = cooldown
    for gate in flow_gate.enter_many([(endpoint_id, None)] * 2):
        gate_calls.leave(
            endpoint_id=endpoint_id, token=gate.token, succeeded=False, duration_ms=5
        )
    assert flow_gate.circuit(endpoint_id)["state"] == "open"
    return timezone.now()


def held_count() -> float:
    return metrics.DELIVERIES_POSTPONED.labels(reason="held")._value.get()


def cooldown_ends_at(moment, opened) -> bool:
    """Whether `moment` is the end of a 60 s cooldown that began at `opened`."""
    return 58.5 <= (moment - opened).total_seconds() <= 60.5


def seconds_until(moment) -> float:
    return (moment - timezone.now()).total_seconds()


def queued(names: list[str] | None = None) -> dict[str, list[str]]:
    """The ids of this test's deliveries waiting in each delivery queue (taken off).

    `names`: the queues of fresh deliveries to look in (the shared one and every
    announced endpoint queue, unless given).

    Messages of rows that no longer exist are left out: an earlier test's retry
    waits out its countdown in Celery's delayed-delivery queues (shared, not
    purged with ours) and can reach the retries queue during a later test.
    """
    found: dict[str, list[str]] = {}
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        channel = conn.default_channel
        for name in (*(names or fresh_queues()), RETRIES_QUEUE):
            # an endpoint's own queue counts as the fresh deliveries' queue
            taken = found.setdefault(
                RETRIES_QUEUE if name == RETRIES_QUEUE else DELIVERIES_QUEUE, []
            )
            while (message := channel.basic_get(queue=name, no_ack=True)) is not None:
                taken.append(json.loads(message.body)[0][0])
    every = [delivery_id for taken in found.values() for delivery_id in taken]
    existing = {
        str(pk)
        for pk in Delivery.objects.filter(pk__in=every).values_list("pk", flat=True)
    }
    return {
        name: [delivery_id for delivery_id in taken if delivery_id in existing]
        for name, taken in found.items()
    }


def test_open_circuit_refuses_until_its_cooldown_ends_and_success_clears_it(
    settings,
):
    # given: three attempts out; two fail and open the circuit for 60 s
    endpoint = str(uuid.uuid4())
    settings.WEBHOOK_BREAKER_FAILURES = 2
    settings.WEBHOOK_BREAKER_COOLDOWN = 60
    first, second, third = flow_gate.enter_many([(endpoint, None)] * 3)
    for gate in (first, second):
        gate_calls.leave(
            endpoint_id=endpoint, token=gate.token, succeeded=False, duration_ms=5
        )
    # then: it refuses every delivery for the cooldown
    assert 58 <= seconds_until(refusing_now()[endpoint]) <= 60
    # when: the third, begun before it opened, succeeds
    gate_calls.leave(
        endpoint_id=endpoint, token=third.token, succeeded=True, duration_ms=5
    )
    # then: closed, and no longer refusing
    assert endpoint not in refusing_now()


def test_receiver_pause_refuses_until_retry_after_even_past_a_success(settings):
    endpoint = str(uuid.uuid4())
    paused, other = flow_gate.enter_many([(endpoint, None)] * 2)
    gate_calls.leave(
        endpoint_id=endpoint,
        token=paused.token,
        succeeded=False,
        duration_ms=5,
        pause=30,
    )
    gate_calls.leave(
        endpoint_id=endpoint, token=other.token, succeeded=True, duration_ms=5
    )
    assert 28 <= seconds_until(refusing_now()[endpoint]) <= 30


def test_hanging_endpoint_refuses_until_its_oldest_request_deadline(settings):
    settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT = 1
    settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_RESPONSE_TIMEOUT = 5, 15
    endpoint = str(uuid.uuid4())
    assert gate_calls.enter(endpoint_id=endpoint, rate_limit=None).allowed
    assert endpoint not in refusing_now()  # busy is not refusing
    time.sleep(1.1)
    assert gate_calls.enter(endpoint_id=endpoint, rate_limit=None).reason == ("hanging")
    assert 18 <= seconds_until(refusing_now()[endpoint]) <= 19


def test_refusal_that_passed_is_dropped_and_reset_clears_one(settings):
    endpoint, other = str(uuid.uuid4()), str(uuid.uuid4())
    for endpoint_id in (endpoint, other):
        [gate] = flow_gate.enter_many([(endpoint_id, None)])
        gate_calls.leave(
            endpoint_id=endpoint_id,
            token=gate.token,
            succeeded=False,
            duration_ms=5,
            pause=0.3 if endpoint_id == endpoint else 30,
        )
    time.sleep(0.4)
    refusing = refusing_now()
    assert endpoint not in refusing
    assert other in refusing
    flow_gate.reset(other)
    assert other not in refusing_now()


@pytest.mark.django_db(transaction=True)
def test_ingest_writes_refusing_endpoints_deliveries_due_later_unpublished(
    tenant, settings
):
    # given: two endpoints for the type, one with its circuit open
    healthy = make_endpoint(tenant=tenant, event_types=["order.created"])
    dead = make_endpoint(tenant=tenant, event_types=["order.created"])
    opened = open_circuit(dead.pk, settings)
    refusals.forget()
    purge_queues()
    held_before = held_count()
    # when
    _, deliveries = make_event(tenant=tenant, event_type="order.created")
    # then: both rows exist; only the healthy one's message was published
    by_endpoint = {d.endpoint_id: d for d in deliveries}
    waiting = by_endpoint[dead.pk]
    assert waiting.lease_expires_at == waiting.next_attempt_at  # no message
    assert cooldown_ends_at(waiting.next_attempt_at, opened)
    fresh = by_endpoint[healthy.pk]
    assert fresh.lease_expires_at > fresh.next_attempt_at
    assert queued() == {DELIVERIES_QUEUE: [str(fresh.pk)], RETRIES_QUEUE: []}
    assert held_count() - held_before == 1


def test_ingest_holds_only_the_tenants_own_refusing_endpoints(tenant, settings):
    # given: another tenant's endpoint refuses
    theirs = make_endpoint(tenant=make_tenant(), event_types=["order.created"])
    open_circuit(theirs.pk, settings)
    mine = make_endpoint(tenant=tenant, event_types=["order.created"])
    refusals.forget()
    # when
    _, [delivery] = make_event(tenant=tenant, event_type="order.created")
    # then
    assert delivery.endpoint_id == mine.pk
    assert delivery.lease_expires_at > delivery.next_attempt_at
    assert refusals.refusing_for_tenant(tenant.pk) == {}


def test_held_endpoints_are_read_again_after_a_reset(tenant, settings):
    endpoint = make_endpoint(tenant=tenant)
    open_circuit(endpoint.pk, settings)
    refusals.forget()
    assert str(endpoint.pk) in refusals.refusing_for_tenant(tenant.pk)
    # when: re-enabled (the admin or the API)
    endpoint_reactivate(endpoint=endpoint)
    # then: this process asks Redis again at once
    assert refusals.refusing_for_tenant(tenant.pk) == {}


def due_rows(tenant, endpoint, count: int, *, age: float) -> list[Delivery]:
    """`count` deliveries to `endpoint` whose lease passed `age` s ago."""
    past = timezone.now() - timedelta(seconds=age)
    rows = []
    for _ in range(count):
        _, deliveries = make_event(tenant=tenant, event_type="order.created")
        rows += [d for d in deliveries if d.endpoint_id == endpoint.pk]
    Delivery.objects.filter(pk__in=[d.pk for d in rows]).update(
        next_attempt_at=past, lease_expires_at=past
    )
    return rows


def other_due_row(tenant) -> Delivery:
    """A due delivery of another endpoint of the tenant (type `other.type`)."""
    other = make_endpoint(tenant=tenant, event_types=["other.type"])
    _, [row] = make_event(tenant=tenant, event_type="other.type")
    past = timezone.now() - timedelta(seconds=1)
    Delivery.objects.filter(pk=row.pk).update(
        next_attempt_at=past, lease_expires_at=past
    )
    assert row.endpoint_id == other.pk
    return row


@pytest.mark.django_db(transaction=True)
def test_sweep_holds_every_due_row_of_a_refusing_endpoint_and_publishes_others(
    monkeypatch, tenant, settings
):
    # given: a batch of 2; five due rows of an endpoint that now refuses (the
    # oldest), one of a healthy endpoint
    monkeypatch.setattr(sweeps, "SWEEP_BATCH", 2)
    dead = make_endpoint(tenant=tenant, event_types=["order.created"])
    held = due_rows(tenant, dead, 5, age=60)
    fresh = other_due_row(tenant)
    opened = open_circuit(dead.pk, settings)
    purge_queues()
    held_before = held_count()
    # when: two sweeps
    first = deliveries_enqueue_due(backlog=0)
    second = deliveries_enqueue_due(backlog=0)
    # then: the first moved all five on (not just its batch) and published
    # nothing of them; the second found the healthy row
    assert (first.enqueued, second.enqueued) == (0, 1)
    assert held_count() - held_before == 5
    for row in Delivery.objects.filter(pk__in=[d.pk for d in held]):
        assert row.lease_expires_at == row.next_attempt_at
        assert cooldown_ends_at(row.next_attempt_at, opened)
    assert queued() == {DELIVERIES_QUEUE: [str(fresh.pk)], RETRIES_QUEUE: []}


@pytest.mark.django_db(transaction=True)
def test_sweep_publishes_held_rows_once_the_refusal_ended(tenant, settings):
    # given: a row held while its receiver paused the endpoint for 2 s
    endpoint = make_endpoint(tenant=tenant, event_types=["order.created"])
    [row] = due_rows(tenant, endpoint, 1, age=60)
    purge_queues()
    [gate] = flow_gate.enter_many([(endpoint.pk, None)])
    gate_calls.leave(
        endpoint_id=endpoint.pk,
        token=gate.token,
        succeeded=False,
        duration_ms=5,
        pause=2,
    )
    assert deliveries_enqueue_due(backlog=0).enqueued == 0
    # when: the pause is over and the row due
    time.sleep(2.2)
    # (Once, in a full run, messages of other rows reached the queues during
    # that sleep; what this test asserts is what the sweep publishes now.)
    purge_queues()
    result = deliveries_enqueue_due(backlog=0)
    # then
    assert result.enqueued == 1
    found = queued()
    assert found[DELIVERIES_QUEUE] + found[RETRIES_QUEUE] == [str(row.pk)]


@pytest.mark.django_db(transaction=True)
def test_sweep_publishes_one_probe_of_a_half_open_endpoint_and_holds_the_rest(
    tenant, settings
):
    # given: four due rows of an endpoint whose circuit's cooldown (1 s) has
    # passed, and a due row of another endpoint
    settings.WEBHOOK_SWEEP_INTERVAL = 5
    endpoint = make_endpoint(tenant=tenant, event_types=["order.created"])
    rows = due_rows(tenant, endpoint, 4, age=60)
    fresh = other_due_row(tenant)
    open_circuit(endpoint.pk, settings, cooldown=1)
    time.sleep(1.1)
    purge_queues()
    held_before = held_count()
    # when: the sweep runs
    result = deliveries_enqueue_due(backlog=0)
    # then: one row of the endpoint goes (its probe) and the other endpoint's;
    # the other three wait one sweep interval, unpublished
    assert result.enqueued == 2
    found = queued()
    published = set(found[DELIVERIES_QUEUE] + found[RETRIES_QUEUE])
    assert str(fresh.pk) in published
    [probe] = published & {str(row.pk) for row in rows}
    rest = Delivery.objects.filter(pk__in=[row.pk for row in rows]).exclude(pk=probe)
    assert len(rest) == 3 and held_count() - held_before == 3
    for row in rest:
        assert row.lease_expires_at == row.next_attempt_at
        assert 4 <= seconds_until(row.next_attempt_at) <= 5
    # when: the probe succeeds (the circuit closes) and the rest come due
    [gate] = flow_gate.enter_many([(endpoint.pk, None)])
    assert gate.probe
    gate_calls.leave(
        endpoint_id=endpoint.pk,
        token=gate.token,
        succeeded=True,
        duration_ms=5,
        probe=True,
    )
    rest.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    # then: the next sweep publishes all three
    assert deliveries_enqueue_due(backlog=0).enqueued == 3
    found = queued()
    assert set(found[DELIVERIES_QUEUE] + found[RETRIES_QUEUE]) == {
        str(row.pk) for row in rest
    }


def test_circuit_half_open_refuses_while_its_probe_is_out(settings):
    # given: an open circuit whose cooldown (1 s) has passed
    endpoint = str(uuid.uuid4())
    open_circuit(endpoint, settings, cooldown=1)
    time.sleep(1.1)
    assert endpoint not in refusing_now()
    # when: the probe goes out
    probe, other = flow_gate.enter_many([(endpoint, None)] * 2)
    # then: nothing else goes until it is back (its slot's length at most)
    assert probe.probe and (other.allowed, other.reason) == (False, "half_open")
    assert endpoint in refusing_now()
    # when: it fails, the circuit opens again for twice as long
    gate_calls.leave(
        endpoint_id=endpoint,
        token=probe.token,
        succeeded=False,
        duration_ms=5,
        probe=True,
    )
    assert 1.5 <= seconds_until(refusing_now()[endpoint]) <= 2


def test_sweep_holds_a_dead_workers_row_of_a_refusing_endpoint_as_pending(
    tenant, settings
):
    # given: a row in progress on a worker that died, its endpoint now refusing
    endpoint = make_endpoint(tenant=tenant, event_types=["order.created"])
    [row] = due_rows(tenant, endpoint, 1, age=60)
    Delivery.objects.filter(pk=row.pk).update(status=DeliveryStatus.IN_PROGRESS)
    opened = open_circuit(endpoint.pk, settings)
    # when
    result = deliveries_enqueue_due(backlog=0)
    # then: back to pending, due when the circuit's cooldown ends, unpublished
    row.refresh_from_db()
    assert result.enqueued == 0
    assert row.status == DeliveryStatus.PENDING
    assert row.lease_expires_at == row.next_attempt_at
    assert cooldown_ends_at(row.next_attempt_at, opened)


@pytest.mark.django_db(transaction=True)
def test_without_redis_nothing_is_held_and_deliveries_go_on(tenant, settings, request):
    # given: an endpoint whose circuit opened, then Redis out of reach
    endpoint = make_endpoint(tenant=tenant, event_types=["order.created"])
    [due] = due_rows(tenant, endpoint, 1, age=60)
    open_circuit(endpoint.pk, settings)
    names = fresh_queues()  # its endpoint's queue was announced meanwhile
    request.getfixturevalue("redis_away")
    refusals.forget()
    purge_queues()
    queued(names)  # what the rows' ingestion published
    # when: an event comes in and the sweep runs
    _, [fresh] = make_event(tenant=tenant, event_type="order.created")
    swept = deliveries_enqueue_due(backlog=0)
    # then: flow control fails open: both published, nothing held
    assert fresh.lease_expires_at > fresh.next_attempt_at
    assert swept.enqueued == 1
    found = queued(names)
    assert sorted(found[DELIVERIES_QUEUE] + found[RETRIES_QUEUE]) == sorted(
        [str(fresh.pk), str(due.pk)]
    )
