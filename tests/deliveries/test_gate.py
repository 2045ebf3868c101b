"""Flow control on real Redis: breaker, rate limit, in-flight cap, pause, disabling."""

import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.flow import gate as flow_gate
from deliveries.flow import refusals
from deliveries.models import Delivery, DeliveryStatus
from deliveries.receiver import WebhookReceiver
from deliveries.services.attempts import delivery_run
from deliveries.services.postponing import deliveries_postpone
from deliveries.services.scheduling import POSTPONE_BROKER_MAX
from deliveries.services.sweeps import deliveries_enqueue_due, open_circuits_refresh
from subscriptions.models import Endpoint
from tests import gate_calls
from tests.conftest import fresh_queues, purge_queues, queued_deliveries
from tests.factories import make_endpoint, make_event
from webhooks_project import metrics
from webhooks_project.queues import RETRIES_QUEUE

pytestmark = pytest.mark.django_db


def refusing_now() -> dict:
    """The refusing endpoints as Redis has them now, not a reading a second old."""
    refusals.forget()
    return refusals.refusing()


def attempt(delivery: Delivery):
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    decision = delivery_run(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    return decision


def fail_n(tenant, n: int) -> list[Delivery]:
    return [make_event(tenant=tenant)[1][0] for _ in range(n)]


@pytest.fixture
def failing(tenant):
    with WebhookReceiver(statuses=[500]) as receiver:
        endpoint = make_endpoint(tenant=tenant, url=receiver.url)
        yield receiver, endpoint


def test_breaker_opens_after_consecutive_failures_and_postpones(
    tenant, failing, settings
):
    settings.WEBHOOK_BREAKER_FAILURES = 3
    settings.WEBHOOK_BREAKER_COOLDOWN = 60
    receiver, endpoint = failing
    for delivery in fail_n(tenant, 3):
        assert attempt(delivery).attempted
    assert flow_gate.circuit(endpoint.pk)["state"] == "open"
    # when: another delivery comes while the circuit is open
    [waiting] = fail_n(tenant, 1)
    decision = attempt(waiting)
    # then: postponed to the end of the cooldown, no request, no attempt spent
    assert decision.attempted is False
    assert decision.postponed == "circuit_open"
    assert len(receiver.received) == 3
    assert waiting.attempt_count == 0
    assert waiting.status == DeliveryStatus.PENDING
    wait = (waiting.next_attempt_at - timezone.now()).total_seconds()
    assert 50 <= wait <= 80


def test_breaker_half_open_lets_one_probe_and_closes_on_success(
    tenant, failing, settings, caplog
):
    settings.WEBHOOK_BREAKER_FAILURES = 2
    settings.WEBHOOK_BREAKER_COOLDOWN = 0.3
    _receiver, endpoint = failing
    for delivery in fail_n(tenant, 2):
        attempt(delivery)
    time.sleep(0.4)
    # half-open: one probe passes, the next caller waits for it
    probe = gate_calls.enter(endpoint_id=endpoint.pk, rate_limit=None)
    other = gate_calls.enter(endpoint_id=endpoint.pk, rate_limit=None)
    assert probe.allowed and probe.probe
    assert not other.allowed and other.reason == "half_open"
    state = gate_calls.leave(
        endpoint_id=endpoint.pk, token=probe.token, succeeded=True, duration_ms=5
    )
    assert state == "closed"
    closed = [r for r in caplog.records if r.getMessage().endswith(" closed")]
    assert [r.endpoint_id for r in closed] == [endpoint.pk]
    assert flow_gate.circuit(endpoint.pk) == {
        "state": "closed",
        "failures": 0,
        "open_until_ms": None,
        "paused_until_ms": None,
    }


def test_breaker_failed_probe_reopens_with_longer_cooldown(tenant, failing, settings):
    settings.WEBHOOK_BREAKER_FAILURES = 1
    settings.WEBHOOK_BREAKER_COOLDOWN = 0.2
    _receiver, endpoint = failing
    [first] = fail_n(tenant, 1)
    attempt(first)
    opened = flow_gate.circuit(endpoint.pk)["open_until_ms"]
    time.sleep(0.3)
    [probe] = fail_n(tenant, 1)
    assert attempt(probe).attempted  # the probe
    reopened = flow_gate.circuit(endpoint.pk)
    assert reopened["state"] == "open"
    # the second cooldown is twice the first: 0.4 s after the probe
    assert reopened["open_until_ms"] - opened >= 400


def test_endpoint_rate_limit_postpones_without_spending(tenant, receiver):
    endpoint = make_endpoint(tenant=tenant, url=receiver.url, rate_limit=2)
    deliveries = fail_n(tenant, 3)
    decisions = [attempt(delivery) for delivery in deliveries]
    assert [d.attempted for d in decisions] == [True, True, False]
    assert decisions[2].postponed == "rate_limited"
    assert 0.3 <= decisions[2].retry_in <= 1.0
    assert deliveries[2].attempt_count == 0
    assert len(receiver.received) == 2
    assert endpoint.pk


def test_endpoint_in_flight_cap(tenant, receiver, settings):
    settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT = 1
    endpoint = make_endpoint(tenant=tenant, url=receiver.url)
    held = gate_calls.enter(endpoint_id=endpoint.pk, rate_limit=None)
    assert held.allowed
    [delivery] = fail_n(tenant, 1)
    decision = attempt(delivery)
    assert decision.postponed == "concurrency"
    assert receiver.received == []
    # a busy endpoint's overflow waits a moment in the broker's delayed delivery
    # (a slot frees when any request ends), covered by a queue lease
    assert 0 < decision.retry_in <= POSTPONE_BROKER_MAX
    assert delivery.lease_expires_at > delivery.next_attempt_at
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.attempt_count == 0
    gate_calls.leave(
        endpoint_id=endpoint.pk, token=held.token, succeeded=True, duration_ms=200
    )
    assert attempt(delivery).status == DeliveryStatus.SUCCEEDED


def test_endpoint_own_in_flight_cap_overrides_the_default(tenant, receiver, settings):
    # given: the server's default is 20, this endpoint's own cap is 2
    settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT = 20
    endpoint = make_endpoint(tenant=tenant, url=receiver.url, max_in_flight=2)
    held = flow_gate.enter_many(
        [(endpoint.pk, None)] * 2, caps={endpoint.pk: endpoint.max_in_flight}
    )
    assert all(gate.allowed for gate in held)
    # when: a delivery to it is attempted
    [delivery] = fail_n(tenant, 1)
    decision = attempt(delivery)
    # then: it waits for a slot, nothing sent
    assert decision.postponed == "concurrency"
    assert receiver.received == []
    # and an endpoint without a cap of its own takes the default
    other = str(uuid.uuid4())
    gates = flow_gate.enter_many([(other, None)] * 21, caps={endpoint.pk: 2})
    assert [gate.allowed for gate in gates] == [True] * 20 + [False]


def test_without_redis_nothing_is_sent_and_the_delivery_waits_a_few_seconds(
    tenant, request
):
    # given: a healthy receiver, and this worker cut off from Redis (it cannot
    # count what the other workers have in flight to the endpoint)
    with WebhookReceiver() as receiver:
        make_endpoint(tenant=tenant, url=receiver.url)
        [delivery] = fail_n(tenant, 1)
        request.getfixturevalue("redis_away")
        before = metrics.DELIVERIES_POSTPONED.labels(reason="unmetered")._value.get()
        # when
        decision = attempt(delivery)
        # then: no request, no attempt spent, back in a few seconds
        assert decision.attempted is False
        assert decision.postponed == "unmetered"
        assert receiver.received == []
    assert delivery.attempt_count == 0
    assert delivery.status == DeliveryStatus.PENDING
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    low, high = flow_gate.UNMETERED_WAIT
    assert low - 1 <= wait <= high
    assert decision.retry_in is not None and decision.retry_in <= POSTPONE_BROKER_MAX
    after = metrics.DELIVERIES_POSTPONED.labels(reason="unmetered")._value.get()
    assert after == before + 1


def test_without_redis_every_ask_of_a_batch_is_refused(request):
    endpoints = [uuid.uuid4(), uuid.uuid4()]
    request.getfixturevalue("redis_away")
    passes = flow_gate.enter_many([(endpoints[0], None), (endpoints[1], 5)] * 2)
    assert [p.allowed for p in passes] == [False] * 4
    assert {p.reason for p in passes} == {"unmetered"}
    assert all(2.0 <= p.wait <= 4.0 for p in passes)


@pytest.mark.django_db(transaction=True)
def test_sweep_sends_postponed_fresh_deliveries_to_the_retries_queue(tenant):
    # given: a fresh delivery put off by flow control, now due
    purge_queues()
    make_endpoint(tenant=tenant)
    [postponed] = fail_n(tenant, 1)
    purge_queues()  # its ingestion's own message
    past = timezone.now() - timedelta(seconds=1)
    Delivery.objects.filter(pk=postponed.pk).update(
        next_attempt_at=postponed.created_at + timedelta(seconds=30),
        lease_expires_at=past,
    )
    # when
    deliveries_enqueue_due(backlog=0)
    # then: it never queues in front of fresh deliveries
    mine = str(postponed.pk)
    assert queued_deliveries(fresh_queues())[mine] == 0
    assert queued_deliveries([RETRIES_QUEUE])[mine] == 1
    purge_queues()


def test_retry_after_pauses_endpoint_without_spending_attempts(tenant, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [5, 60]
    with WebhookReceiver(statuses=[503], retry_after=20) as receiver:
        make_endpoint(tenant=tenant, url=receiver.url)
        first, second = fail_n(tenant, 2)
        decision = attempt(first)
        # the 503 counted as an attempt row, not against the schedule
        assert decision.retry_in == 20
        assert first.attempt_count == 1
        assert first.attempt_count - first.round_start == 0
        assert first.status == DeliveryStatus.FAILED
        # the whole endpoint is paused, not only this delivery
        paused = attempt(second)
        assert paused.postponed == "paused"
        assert len(receiver.received) == 1
        # and no amount of 503s dead-letters it before the endpoint is disabled
        for _ in range(4):
            flow_gate.reset(first.endpoint_id)
            attempt(first)
        assert first.status == DeliveryStatus.FAILED


def test_410_disables_endpoint_dead_letters_pending_and_replay_missed(tenant, api):
    with WebhookReceiver(statuses=[410]) as receiver:
        endpoint = make_endpoint(tenant=tenant, url=receiver.url)
        gone, waiting = fail_n(tenant, 2)
        attempt(gone)
        waiting.refresh_from_db()
        endpoint.refresh_from_db()
        assert endpoint.is_active is False
        assert gone.status == waiting.status == DeliveryStatus.DEAD_LETTER
        assert waiting.dead_letter_reason.startswith("endpoint disabled")
        # when: the tenant fixes the receiver and re-enables the endpoint
        receiver.set_statuses([200])
        path = f"/api/v1/endpoints/{endpoint.pk}"
        assert api.patch(path, {"is_active": True}, format="json").status_code == 200
        replay = api.post(f"{path}/replay-missed")
        assert replay.status_code == 202
        assert replay.json() == {"replayed": 2}
        for delivery in (gone, waiting):
            assert attempt(delivery).status == DeliveryStatus.SUCCEEDED


def test_endpoint_failing_too_long_is_disabled(tenant, failing, settings):
    settings.WEBHOOK_DISABLE_AFTER = 3600
    _receiver, endpoint = failing
    first, second, waiting = fail_n(tenant, 3)
    attempt(first)
    endpoint.refresh_from_db()
    assert endpoint.failing_since is not None
    Endpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(hours=2)
    )
    attempt(second)
    endpoint.refresh_from_db()
    waiting.refresh_from_db()
    assert endpoint.is_active is False
    assert "no successful delivery" in endpoint.disabled_reason
    assert second.status == DeliveryStatus.DEAD_LETTER
    assert waiting.status == DeliveryStatus.DEAD_LETTER


def test_success_ends_failure_run(tenant, settings):
    with WebhookReceiver(statuses=[500, 200]) as receiver:
        endpoint = make_endpoint(tenant=tenant, url=receiver.url)
        first, second = fail_n(tenant, 2)
        attempt(first)
        attempt(second)
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None


def test_tenant_disabling_endpoint_dead_letters_pending(api, tenant):
    endpoint = make_endpoint(tenant=tenant)
    [delivery] = fail_n(tenant, 1)
    response = api.patch(
        f"/api/v1/endpoints/{endpoint.pk}", {"is_active": False}, format="json"
    )
    assert response.status_code == 200
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DEAD_LETTER
    assert delivery.dead_letter_reason == "endpoint disabled: disabled by the tenant"


def test_endpoint_representation_and_gauge_show_open_circuit(
    tenant, api, failing, settings
):
    settings.WEBHOOK_BREAKER_FAILURES = 1
    _receiver, endpoint = failing
    [delivery] = fail_n(tenant, 1)
    attempt(delivery)
    circuit = api.get(f"/api/v1/endpoints/{endpoint.pk}").json()["circuit"]
    assert circuit["state"] == "open"
    assert circuit["failures"] == 1
    assert open_circuits_refresh() >= 1
    assert metrics.CIRCUITS_OPEN._value.get() >= 1
    flow_gate.reset(endpoint.pk)
    assert api.get(f"/api/v1/endpoints/{endpoint.pk}").json()["circuit"]["state"] == (
        "closed"
    )


@pytest.mark.django_db(transaction=True)
def test_sweep_routes_retries_apart_from_fresh_deliveries(tenant):
    purge_queues()
    make_endpoint(tenant=tenant)
    fresh, retried = fail_n(tenant, 2)
    past = timezone.now() - timedelta(seconds=1)
    Delivery.objects.filter(pk=fresh.pk).update(lease_expires_at=past)
    Delivery.objects.filter(pk=retried.pk).update(
        lease_expires_at=past, attempt_count=1, status=DeliveryStatus.FAILED
    )
    deliveries_enqueue_due(backlog=0)
    # the ingestion itself queued both once (fresh queue: the shared one or the
    # endpoint's own); the sweep added one each
    retries = queued_deliveries([RETRIES_QUEUE])
    fresh_ones = queued_deliveries(fresh_queues())
    assert (retries[str(fresh.pk)], retries[str(retried.pk)]) == (0, 1)
    assert (fresh_ones[str(fresh.pk)], fresh_ones[str(retried.pk)]) == (2, 1)
    purge_queues()


def test_breaker_in_flight_failures_after_opening_keep_base_cooldown(
    tenant, failing, settings
):
    """Attempts that began before the circuit opened do not stretch its cooldown."""
    settings.WEBHOOK_BREAKER_FAILURES = 2
    settings.WEBHOOK_BREAKER_COOLDOWN = 30
    _receiver, endpoint = failing
    # given: six attempts in flight at once
    gates = [
        gate_calls.enter(endpoint_id=endpoint.pk, rate_limit=None) for _ in range(6)
    ]
    assert all(gate.allowed and not gate.probe for gate in gates)
    # when: all of them fail; the second one opens the circuit
    for gate in gates:
        state = gate_calls.leave(
            endpoint_id=endpoint.pk, token=gate.token, succeeded=False, duration_ms=5
        )
    # then: open for the base cooldown, not 30 s doubled four times
    assert state == "open"
    circuit = flow_gate.circuit(endpoint.pk)
    reopens_in = circuit["open_until_ms"] / 1000 - time.time()
    assert 25 <= reopens_in <= 31


def test_breaker_counts_failures_in_the_order_requests_were_sent(settings, caplog):
    """Requests that hung while a later one was answered do not open the circuit."""
    settings.WEBHOOK_BREAKER_FAILURES = 10
    settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT = 20
    endpoint = str(uuid.uuid4())
    # given: twelve requests sent, then one more that is answered at once
    hung = [gate_calls.enter(endpoint_id=endpoint, rate_limit=None) for _ in range(12)]
    sent = time.monotonic()
    time.sleep(0.05)
    answered = gate_calls.enter(endpoint_id=endpoint, rate_limit=None)
    gate_calls.leave(
        endpoint_id=endpoint, token=answered.token, succeeded=True, duration_ms=2
    )
    # when: the twelve time out afterwards, one after the other
    for gate in hung:
        elapsed_ms = int((time.monotonic() - sent) * 1000) + 50
        state = gate_calls.leave(
            endpoint_id=endpoint,
            token=gate.token,
            succeeded=False,
            duration_ms=elapsed_ms,
        )
    # then: twelve failures in a row as they ended, none after the success as
    # they were sent: the circuit stays closed
    assert state == "closed"
    assert flow_gate.circuit(endpoint)["failures"] == 0
    # and failures of requests sent after the success do count
    for _ in range(10):
        gate = gate_calls.enter(endpoint_id=endpoint, rate_limit=None)
        state = gate_calls.leave(
            endpoint_id=endpoint, token=gate.token, succeeded=False, duration_ms=2
        )
    assert state == "open"
    # and the opening is logged once, with the endpoint
    opened = [r for r in caplog.records if "opened" in r.getMessage()]
    assert [r.endpoint_id for r in opened] == [endpoint]


def test_enter_many_asks_once_per_endpoint_and_keeps_cap_and_rate(settings):
    # given: two endpoints in one batch, one capped at 3 in flight, one at 2/s
    settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT = 3
    capped, limited = str(uuid.uuid4()), str(uuid.uuid4())
    # when: five attempts for the first, four for the second, interleaved
    requests = [(capped, None), (limited, 2)] * 4 + [(capped, None)]
    passes = flow_gate.enter_many(requests)
    # then: the cap lets three through, the rest wait for a slot
    first = [p for (e, _), p in zip(requests, passes, strict=True) if e == capped]
    assert [p.allowed for p in first] == [True, True, True, False, False]
    assert {p.reason for p in first if not p.allowed} == {"concurrency"}
    # the bucket (burst 2) lets two through; each refused one waits for its token
    second = [p for (e, _), p in zip(requests, passes, strict=True) if e == limited]
    assert [p.allowed for p in second] == [True, True, False, False]
    assert [p.reason for p in second[2:]] == ["rate_limited", "rate_limited"]
    assert 0.45 <= second[2].wait <= 0.65
    assert 0.95 <= second[3].wait <= 1.3
    # and every slot taken is freed by leave, in one call per endpoint
    states = flow_gate.leave_many(
        [
            flow_gate.Report(e, p.token, succeeded=True, duration_ms=5)
            for (e, _), p in zip(requests, passes, strict=True)
            if p.allowed
        ]
    )
    assert states == ["closed"] * 5
    again = flow_gate.enter_many([(capped, None)] * 3)
    assert all(p.allowed for p in again)


def test_endpoint_at_its_cap_that_never_answered_is_hanging_after_a_second(settings):
    # given: an endpoint at its cap of 2, its requests out and none ended yet
    settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT = 2
    settings.WEBHOOK_CONNECT_TIMEOUT, settings.WEBHOOK_RESPONSE_TIMEOUT = 5, 15
    endpoint = str(uuid.uuid4())
    held = flow_gate.enter_many([(endpoint, None)] * 2)
    assert all(p.allowed for p in held)
    # when: asked again at once, then after the oldest ran over a second
    young = gate_calls.enter(endpoint_id=endpoint, rate_limit=None)
    time.sleep(1.1)
    old = gate_calls.enter(endpoint_id=endpoint, rate_limit=None)
    # then: busy at first (a slot may free any moment), hanging after: nothing
    # frees before the oldest request's deadline (20 s from its start)
    assert (young.allowed, young.reason) == (False, "concurrency")
    assert young.wait < 1
    assert (old.allowed, old.reason) == (False, "hanging")
    assert 18.8 <= old.wait <= 18.9 * 1.25  # 20 s - 1.1 s, spread up to 25 %


def test_endpoint_silent_for_ten_times_its_usual_is_stalled_until_it_may_hang(
    settings,
):
    # given: an endpoint that answers in 5 ms, at its cap of 2, both requests
    # out for 0.3 s and nothing ended since
    settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT = 2
    endpoint = str(uuid.uuid4())
    [first] = flow_gate.enter_many([(endpoint, None)])
    gate_calls.leave(
        endpoint_id=endpoint, token=first.token, succeeded=True, duration_ms=5
    )
    assert all(p.allowed for p in flow_gate.enter_many([(endpoint, None)] * 2))
    time.sleep(0.3)
    # when
    gate = gate_calls.enter(endpoint_id=endpoint, rate_limit=None)
    # then: refused (listed as refusing) until it may be called hanging, a
    # second after its requests went out
    assert (gate.allowed, gate.reason) == (False, "stalled")
    assert 0.6 <= gate.wait <= 0.7 * 1.25
    until = refusing_now()[endpoint]
    assert 0.5 <= (until - timezone.now()).total_seconds() <= 0.7


def test_endpoint_that_never_answered_is_not_stalled_it_may_be_slow(settings):
    # given: a new endpoint at its cap of 2, its requests out for 0.3 s
    settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT = 2
    endpoint = str(uuid.uuid4())
    assert all(p.allowed for p in flow_gate.enter_many([(endpoint, None)] * 2))
    time.sleep(0.3)
    # when
    gate = gate_calls.enter(endpoint_id=endpoint, rate_limit=None)
    # then: busy; the hanging rule (after a second) still applies to it
    assert (gate.allowed, gate.reason) == (False, "concurrency")
    assert endpoint not in refusing_now()


def test_endpoint_whose_other_slots_turn_over_is_busy_until_nothing_ends(settings):
    # given: an endpoint at its cap of 2 whose oldest request hangs (1.1 s)
    settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT = 2
    endpoint = str(uuid.uuid4())
    _, other = flow_gate.enter_many([(endpoint, None)] * 2)
    time.sleep(1.1)
    # when: its other slot turns over (a 5 ms answer, the next request takes it)
    gate_calls.leave(
        endpoint_id=endpoint, token=other.token, succeeded=True, duration_ms=5
    )
    assert gate_calls.enter(endpoint_id=endpoint, rate_limit=None).allowed
    busy = gate_calls.enter(endpoint_id=endpoint, rate_limit=None)
    # then: busy, not hanging: its requests still end
    assert (busy.allowed, busy.reason) == (False, "concurrency")
    assert endpoint not in refusing_now()
    # and once nothing has ended for a second, it hangs
    time.sleep(1.1)
    stuck = gate_calls.enter(endpoint_id=endpoint, rate_limit=None)
    assert (stuck.allowed, stuck.reason) == (False, "hanging")


@pytest.mark.parametrize(
    ("usual_ms", "out_for", "slot_in"),
    [
        # 0.3 s is three times its usual 100 ms: slow, not stalled; a slot is
        # expected once the oldest request has run that long again
        (100, 0.3, (0.3, 0.4)),
        # 1.1 s is not ten times its usual 2 s: a slot frees in about 2 s
        (2000, 1.1, (2.0, 2.5)),
    ],
)
def test_endpoint_at_its_cap_under_ten_times_its_usual_duration_is_busy(
    settings, usual_ms, out_for, slot_in
):
    # given: two requests out for `out_for` s, to an endpoint that answers in
    # `usual_ms`
    settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT = 2
    endpoint = str(uuid.uuid4())
    [first] = flow_gate.enter_many([(endpoint, None)])
    gate_calls.leave(
        endpoint_id=endpoint, token=first.token, succeeded=True, duration_ms=usual_ms
    )
    flow_gate.enter_many([(endpoint, None)] * 2)
    time.sleep(out_for)
    # when
    gate = gate_calls.enter(endpoint_id=endpoint, rate_limit=None)
    # then: busy, neither stalled nor hanging, and not refusing everything
    assert (gate.allowed, gate.reason) == (False, "concurrency")
    assert slot_in[0] <= gate.wait <= slot_in[1]
    assert endpoint not in refusing_now()


def test_hanging_endpoint_overflow_waits_in_postgresql_not_the_broker(tenant):
    # given: claimed deliveries of an endpoint flow control found hanging
    make_endpoint(tenant=tenant)
    [delivery] = fail_n(tenant, 1)
    # when: put off until its oldest request's deadline
    [decision] = deliveries_postpone(items=[(delivery, 19.0, "hanging")])
    delivery.refresh_from_db()
    # then: no message cycles through the delayed queues; the sweep brings the
    # row back when due (lease = due time: "no message exists")
    assert decision.retry_in is None
    assert decision.postponed == "hanging"
    assert delivery.lease_expires_at == delivery.next_attempt_at
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert 18 <= wait <= 19
    assert delivery.attempt_count == 0
