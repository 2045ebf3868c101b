"""Ordered delivery per key: `ordering_key`, lines, parking and release."""

import json
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from deliveries.models import FINAL_STATUSES, Delivery, DeliveryStatus, Event
from deliveries.receiver import WebhookReceiver
from deliveries.services import ordering
from deliveries.services.attempts import deliveries_admit
from deliveries.services.claim import deliveries_claim
from deliveries.services.postponing import deliveries_postpone
from deliveries.services.recording import attempts_store_successes
from deliveries.services.recovery import endpoint_recover
from deliveries.services.replay import dead_letters_replay
from deliveries.services.scheduling import delivery_dead_letter, delivery_requeue
from deliveries.services.sweeps import (
    deliveries_dead_letter_exhausted,
    deliveries_enqueue_due,
    deliveries_expire,
)
from tests.conftest import wait_until
from tests.deliveries.test_e2e_worker import create_endpoint
from tests.factories import make_endpoint

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events"


def publish(api, key=None, n=1, **fields) -> dict:
    body = {"event_type": "order.updated", "payload": {"n": n}, **fields}
    if key is not None:
        body["ordering_key"] = key
    response = api.post(EVENTS, body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def line(endpoint_id, key) -> list[Delivery]:
    return list(
        Delivery.objects.filter(endpoint_id=endpoint_id, ordering_key=key).order_by(
            "sequence"
        )
    )


def is_parked(delivery: Delivery) -> bool:
    delivery.refresh_from_db()
    return (
        delivery.status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
        and delivery.parked_at is not None
        and delivery.lease_expires_at == delivery.next_attempt_at
        and delivery.next_attempt_at > timezone.now() + timedelta(minutes=9)
    )


def is_released(delivery: Delivery) -> bool:
    """Due now with a queued lease: its message was published."""
    delivery.refresh_from_db()
    return (
        delivery.next_attempt_at <= timezone.now()
        and delivery.lease_expires_at > delivery.next_attempt_at
    )


def two_in_a_line(api, tenant):
    """An endpoint with two events of key "k" published to it, in order."""
    endpoint = make_endpoint(tenant=tenant)
    publish(api, key="k", n=1)
    publish(api, key="k", n=2)
    return endpoint


def claim(delivery: Delivery) -> bool:
    return [d.pk for d in deliveries_claim(delivery_ids=[delivery.pk])] == [delivery.pk]


def succeed(delivery: Delivery) -> None:
    """Record a 2xx for a claimed delivery, as a worker does (the batch statement)."""
    delivery = Delivery.objects.select_related("event", "endpoint").get(pk=delivery.pk)
    assert delivery.status == DeliveryStatus.IN_PROGRESS
    now = timezone.now()
    stored = {
        "response_status": 200,
        "error": "",
        "started_at": now,
        "duration_ms": 1,
        "outcome": "success",
        "request_headers": {},
        "response_headers": {},
        "response_body": "",
    }
    assert attempts_store_successes(items=[(delivery, stored)], now=now)


# --- the API ---------------------------------------------------------------


def test_ordering_key_is_stored_copied_and_shown(api, tenant):
    endpoint = make_endpoint(tenant=tenant)
    answer = publish(api, key="order-17")
    assert answer["ordering_key"] == "order-17"
    assert Event.objects.get(pk=answer["id"]).ordering_key == "order-17"
    delivery = Delivery.objects.get(event_id=answer["id"], endpoint=endpoint)
    assert delivery.ordering_key == "order-17"
    assert delivery.sequence is not None
    assert api.get(f"{EVENTS}/{answer['id']}").json()["ordering_key"] == "order-17"
    shown = api.get(f"/api/v1/deliveries/{delivery.pk}").json()
    assert shown["ordering_key"] == "order-17"
    plain = publish(api)
    assert plain["ordering_key"] is None
    unkeyed = Delivery.objects.get(event_id=plain["id"])
    assert (unkeyed.ordering_key, unkeyed.sequence) == (None, None)


@pytest.mark.parametrize(
    "key",
    [
        '""',
        json.dumps("k" * 129),
        "17",
        "true",
        '["a"]',
        '{"a": 1}',
        r'"nul\u0000key"',
    ],
)
def test_malformed_ordering_keys_are_a_400_naming_the_field(api, tenant, key):
    make_endpoint(tenant=tenant)
    body = f'{{"event_type": "order.updated", "payload": {{}}, "ordering_key": {key}}}'
    response = api.post(EVENTS, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert "ordering_key" in response.json()
    batch = api.post(
        f"{EVENTS}/batch", f'{{"events": [{body}]}}', content_type="application/json"
    )
    assert batch.status_code == 400
    assert "ordering_key" in batch.json()["events"]["0"]
    assert not Event.objects.exists()


def test_a_128_character_key_of_any_text_is_accepted(api, tenant):
    make_endpoint(tenant=tenant)
    key = "ключ/🔑 " + "x" * 121
    assert len(key) == 128
    assert publish(api, key=key)["ordering_key"] == key


def test_an_idempotency_key_reused_with_another_ordering_key_is_a_conflict(api, tenant):
    make_endpoint(tenant=tenant)
    first = publish(api, key="a", event_id="evt-1")

    def again(key):
        body = {"event_type": "order.updated", "payload": {"n": 1}, "event_id": "evt-1"}
        return api.post(EVENTS, {**body, "ordering_key": key}, format="json")

    repeat = again("a")
    assert repeat.status_code == 200
    assert repeat.json()["id"] == first["id"]
    assert again("b").status_code == 409


def test_sequence_follows_acceptance_order_singly_and_in_batches(api, tenant):
    endpoint = make_endpoint(tenant=tenant)
    first = publish(api, key="k", n=0)
    # Idempotency keys sorted against the items' order: the batch inserts
    # its events in key order, the sequence must still follow the items.
    items = [
        {
            "event_type": "order.updated",
            "payload": {"n": n},
            "ordering_key": "k",
            "event_id": f"id-{9 - n}",
        }
        for n in range(1, 9)
    ]
    response = api.post(f"{EVENTS}/batch", {"events": items}, format="json")
    assert response.status_code == 202, response.content
    last = publish(api, key="k", n=9)
    deliveries = line(endpoint.pk, "k")
    assert [d.event.payload["n"] for d in deliveries] == list(range(10))
    assert deliveries[0].event_id == Delivery.objects.get(event_id=first["id"]).event_id
    assert deliveries[-1].event_id == Delivery.objects.get(event_id=last["id"]).event_id


# --- claims, parking, release ------------------------------------------------


def test_a_line_is_claimed_one_at_a_time_in_sequence(api, tenant):
    endpoint = make_endpoint(tenant=tenant)
    for n in range(3):
        publish(api, key="k", n=n)
    first, second, third = line(endpoint.pk, "k")
    # when: a worker gets all three messages in one batch
    claimed = deliveries_claim(delivery_ids=[third.pk, second.pk, first.pk])
    # then: only the head goes; the others are parked (no message)
    assert [d.pk for d in claimed] == [first.pk]
    assert is_parked(second) and is_parked(third)
    # when: the head succeeds, the next one is published, and only it
    succeed(first)
    assert is_released(second)
    assert is_parked(third)
    assert claim(second)
    succeed(second)
    assert is_released(third)
    assert claim(third)


def test_other_keys_and_unkeyed_events_are_not_held_up(api, tenant):
    endpoint = make_endpoint(tenant=tenant)
    publish(api, key="a", n=1)
    publish(api, key="a", n=2)
    publish(api, key="b", n=1)
    publish(api)
    head_a, next_a = line(endpoint.pk, "a")
    (head_b,) = line(endpoint.pk, "b")
    unkeyed = Delivery.objects.get(ordering_key__isnull=True)
    # A's head is in flight (or failing): B and the unkeyed one go anyway.
    assert claim(head_a)
    assert not claim(next_a)
    assert claim(head_b)
    assert claim(unkeyed)


def test_the_same_key_on_two_endpoints_makes_two_lines(api, tenant):
    one, two = make_endpoint(tenant=tenant), make_endpoint(tenant=tenant)
    publish(api, key="k", n=1)
    publish(api, key="k", n=2)
    assert claim(line(one.pk, "k")[0])
    assert claim(line(two.pk, "k")[0])
    assert not claim(line(one.pk, "k")[1])


def test_a_failing_head_blocks_its_line_through_its_retries(api, tenant):
    endpoint = two_in_a_line(api, tenant)
    head, behind = line(endpoint.pk, "k")
    assert claim(head)
    Delivery.objects.filter(pk=head.pk).update(
        status=DeliveryStatus.FAILED, next_attempt_at=timezone.now()
    )
    assert not claim(behind)
    assert is_parked(behind)
    assert claim(head)


@pytest.mark.parametrize("how", ["dead_letter", "exhausted", "expired"])
def test_a_head_that_ends_without_success_releases_its_line(api, tenant, how):
    endpoint = two_in_a_line(api, tenant)
    head, behind = line(endpoint.pk, "k")
    assert not claim(behind) and is_parked(behind)
    if how == "dead_letter":
        delivery_dead_letter(delivery=head, reason="endpoint disabled")
    elif how == "exhausted":
        Delivery.objects.filter(pk=head.pk).update(
            status=DeliveryStatus.FAILED, attempt_count=99
        )
        assert deliveries_dead_letter_exhausted() == 1
    else:
        Delivery.objects.filter(pk=head.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
        assert deliveries_expire() == 1
    assert is_released(behind)
    assert claim(behind)


def test_a_replayed_dead_letter_waits_for_the_attempt_in_flight(api, tenant):
    endpoint = make_endpoint(tenant=tenant)
    for n in range(3):
        publish(api, key="k", n=n)
    first, second, third = line(endpoint.pk, "k")
    delivery_dead_letter(delivery=first, reason="retries exhausted")
    assert claim(second)
    # when: the dead letter is replayed while the next one is in flight
    assert (
        dead_letters_replay(queryset=Delivery.objects.filter(pk=first.pk)).replayed == 1
    )
    # then: it waits (parked), and it goes before the third
    assert not claim(first)
    assert is_parked(first)
    succeed(second)
    assert is_released(first)
    assert not claim(third)
    assert claim(first)


def test_a_parked_delivery_whose_head_ended_meanwhile_is_published(api, tenant):
    """The lost wake-up: the head ends between the claim and the parking."""
    endpoint = two_in_a_line(api, tenant)
    head, behind = line(endpoint.pk, "k")
    assert claim(head)
    # The release ran before `behind` was parked (it saw it queued): the
    # parking's own check publishes it.
    Delivery.objects.filter(pk=behind.pk).update(
        next_attempt_at=timezone.now(),
        lease_expires_at=timezone.now() + timedelta(seconds=60),
    )
    Delivery.objects.filter(pk=head.pk).update(status=DeliveryStatus.SUCCEEDED)
    assert ordering.lines_release({(endpoint.pk, "k")}) == []
    parked = ordering.deliveries_park(delivery_ids=[behind.pk], due=timezone.now())
    assert parked == {behind.pk}
    assert is_released(behind)


def test_a_release_never_cuts_a_failing_heads_wait_short(api, tenant):
    """A head waiting for its next retry in PostgreSQL is not parked: a
    follower that expires (or any release) leaves its backoff alone."""
    endpoint = two_in_a_line(api, tenant)
    head, behind = line(endpoint.pk, "k")
    assert claim(head)
    later = timezone.now() + timedelta(seconds=300)
    Delivery.objects.filter(pk=head.pk).update(
        status=DeliveryStatus.FAILED, next_attempt_at=later, lease_expires_at=later
    )
    assert not claim(behind) and is_parked(behind)
    Delivery.objects.filter(pk=behind.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert deliveries_expire() == 1
    assert ordering.lines_release({(endpoint.pk, "k")}) == []
    head.refresh_from_db()
    assert (head.next_attempt_at, head.lease_expires_at) == (later, later)


def test_claims_racing_twice_take_the_unkeyed_and_park_the_keyed(
    api, tenant, monkeypatch
):
    """Past two conflicts with other claims of its lines, a batch's keyed
    deliveries are parked and its unkeyed ones claimed."""
    from django.db import IntegrityError

    from deliveries.services import claim as claiming

    endpoint = make_endpoint(tenant=tenant)
    publish(api, key="k")
    publish(api)
    (keyed,) = line(endpoint.pk, "k")
    unkeyed = Delivery.objects.get(ordering_key__isnull=True)
    real, tries = claiming._claimed_rows, []

    def racing(sql, *args, **kwargs):
        tries.append(sql)
        if sql is claiming._SQL:
            raise IntegrityError("delivery_line_in_progress")
        return real(sql, *args, **kwargs)

    monkeypatch.setattr(claiming, "_claimed_rows", racing)
    claimed = deliveries_claim(delivery_ids=[keyed.pk, unkeyed.pk])
    assert [d.pk for d in claimed] == [unkeyed.pk]
    assert tries == [claiming._SQL, claiming._SQL, claiming._UNKEYED_SQL]
    # Parked, then published again at once: nothing really holds its line here.
    keyed.refresh_from_db()
    assert keyed.status == DeliveryStatus.PENDING
    assert is_released(keyed)


def test_recovered_deliveries_join_the_end_of_their_lines_in_event_order(api, tenant):
    since = timezone.now() - timedelta(seconds=1)
    for n in range(3):
        publish(api, key="k", n=n)
    late = make_endpoint(tenant=tenant)  # it missed them
    endpoint_recover(endpoint=late, since=since)
    recovered = line(late.pk, "k")
    assert [d.event.payload["n"] for d in recovered] == [0, 1, 2]
    assert all(d.sequence is not None for d in recovered)
    assert claim(recovered[0]) and not claim(recovered[1])


def test_a_parked_delivery_waits_longer_the_longer_its_line_is_held(api, tenant):
    endpoint = two_in_a_line(api, tenant)
    _, behind = line(endpoint.pk, "k")
    for waited, recheck in [(0, 10), (15, 15), (180, 60)]:
        since = timezone.now() - timedelta(minutes=waited)
        Delivery.objects.filter(pk=behind.pk).update(
            parked_at=since if waited else None, next_attempt_at=timezone.now()
        )
        assert ordering.deliveries_park(
            delivery_ids=[behind.pk], due=timezone.now()
        ) == {behind.pk}
        behind.refresh_from_db()
        wait = behind.next_attempt_at - timezone.now()
        assert timedelta(minutes=recheck - 1) < wait <= timedelta(minutes=recheck)
        assert behind.lease_expires_at == behind.next_attempt_at


def test_racing_claims_of_one_line_never_hold_two_attempts(
    api, tenant, transactional_db
):
    """The check reads a snapshot; the unique index decides when claims race."""
    endpoint = two_in_a_line(api, tenant)
    first, second = line(endpoint.pk, "k")
    claiming, done = threading.Event(), threading.Event()

    def claim_second_meanwhile():
        # As a claim whose snapshot did not see `first` yet would.
        try:
            with transaction.atomic():
                Delivery.objects.filter(pk=second.pk).update(
                    status=DeliveryStatus.IN_PROGRESS
                )
                claiming.set()
                done.wait(1)
        finally:
            connection.close()

    other = threading.Thread(target=claim_second_meanwhile)
    other.start()
    assert claiming.wait(5)
    # `first`'s claim sees `second` pending, takes its row, and meets the
    # other's index entry: once that commits, the claim runs again and leaves it.
    threading.Timer(0.3, done.set).start()
    assert deliveries_claim(delivery_ids=[first.pk]) == []
    other.join(5)
    in_progress = Delivery.objects.filter(
        endpoint=endpoint, status=DeliveryStatus.IN_PROGRESS
    )
    assert [d.pk for d in in_progress] == [second.pk]
    assert is_parked(first)


def test_a_head_that_stops_holding_its_line_lets_a_replayed_one_go(api, tenant):
    """A dead letter replayed while a later one was in flight is parked; when
    that one is postponed (or fails, or its worker is lost), it goes."""
    endpoint = two_in_a_line(api, tenant)
    first, second = line(endpoint.pk, "k")
    delivery_dead_letter(delivery=first, reason="retries exhausted")
    (claimed,) = deliveries_claim(delivery_ids=[second.pk])
    delivery_requeue(delivery=first)
    assert not claim(first) and is_parked(first)
    deliveries_postpone(items=[(claimed, 30.0, "concurrency")])
    assert is_released(first)
    assert claim(first)


def test_a_lost_attempt_found_by_the_sweep_lets_a_replayed_one_go(api, tenant):
    endpoint = two_in_a_line(api, tenant)
    first, second = line(endpoint.pk, "k")
    delivery_dead_letter(delivery=first, reason="retries exhausted")
    assert claim(second)
    delivery_requeue(delivery=first)
    assert not claim(first) and is_parked(first)
    Delivery.objects.filter(pk=second.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert deliveries_enqueue_due(backlog=0).recovered == 1
    assert is_released(first)
    assert claim(first)


def test_release_waits_for_a_parking_that_holds_the_line_lock(
    api, tenant, transactional_db
):
    """Whichever of release and park-check runs second sees the other's commit."""
    endpoint = two_in_a_line(api, tenant)
    head, behind = line(endpoint.pk, "k")
    assert claim(head)
    assert not claim(behind)
    assert is_parked(behind)
    locked, done = threading.Event(), threading.Event()

    def hold_the_line():
        try:
            with transaction.atomic():
                ordering._lines_lock([endpoint.pk], ["k"])
                locked.set()
                done.wait(5)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_line)
    holder.start()
    assert locked.wait(5)
    ended = threading.Thread(target=lambda: (succeed(head), connection.close()))
    ended.start()
    ended.join(0.5)
    assert ended.is_alive()  # the release waits for the line's lock
    done.set()
    holder.join(5)
    ended.join(5)
    assert is_released(behind)


def test_a_release_skips_a_parked_row_somebody_else_holds(
    api, tenant, transactional_db
):
    """No release waits for a row lock while it holds line locks (no deadlock
    with the expiry or a claim that hold the row and wait for the line)."""
    endpoint = two_in_a_line(api, tenant)
    head, behind = line(endpoint.pk, "k")
    assert not claim(behind) and is_parked(behind)
    Delivery.objects.filter(pk=head.pk).update(status=DeliveryStatus.SUCCEEDED)
    locked, done = threading.Event(), threading.Event()

    def hold_the_row():
        try:
            with transaction.atomic():
                list(Delivery.objects.select_for_update().filter(pk=behind.pk))
                locked.set()
                done.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    assert locked.wait(5)
    try:
        started = time.monotonic()
        assert ordering.lines_release({(endpoint.pk, "k")}) == []
        assert ordering.parked_release([(behind.pk, endpoint.pk, "k")]) == []
        assert time.monotonic() - started < 2
    finally:
        done.set()
        holder.join(5)
    assert ordering.lines_release({(endpoint.pk, "k")}) == [behind.pk]


def test_a_lost_worker_still_holds_its_line_until_the_sweep_recovers_it(api, tenant):
    endpoint = two_in_a_line(api, tenant)
    head, behind = line(endpoint.pk, "k")
    assert claim(head)
    Delivery.objects.filter(pk=head.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert not claim(behind)
    assert deliveries_enqueue_due(backlog=0).recovered == 1
    assert claim(head)


def test_the_sweep_publishes_a_parked_delivery_after_its_recheck(api, tenant):
    endpoint = two_in_a_line(api, tenant)
    head, behind = line(endpoint.pk, "k")
    assert not claim(behind) and is_parked(behind)
    # The release was lost (its worker died before publishing): past the
    # recheck the sweep publishes it, and the claim parks it again while the
    # head is open, or takes it once the head has ended.
    past = timezone.now() - timedelta(seconds=1)
    Delivery.objects.filter(pk=behind.pk).update(
        next_attempt_at=past, lease_expires_at=past
    )
    Delivery.objects.filter(pk=head.pk).update(status=DeliveryStatus.SUCCEEDED)
    assert deliveries_enqueue_due(backlog=0).enqueued == 1
    assert claim(behind)


def test_a_manual_retry_of_a_final_head_goes_before_the_rest(api, tenant):
    endpoint = two_in_a_line(api, tenant)
    head, behind = line(endpoint.pk, "k")
    delivery_dead_letter(delivery=head, reason="retries exhausted")
    delivery_requeue(delivery=head)
    assert not claim(behind)
    assert claim(head)


def test_claims_that_take_every_delivery_run_no_parking_statement(
    api, tenant, monkeypatch
):
    make_endpoint(tenant=tenant)
    publish(api)
    publish(api, key="k")
    parks = []
    monkeypatch.setattr(
        "deliveries.services.claim.deliveries_park",
        lambda **kwargs: parks.append(kwargs),
    )
    ids = list(Delivery.objects.values_list("pk", flat=True))
    assert len(deliveries_admit(delivery_ids=ids).ready) == 2
    assert parks == []


# --- end to end --------------------------------------------------------------


def test_e2e_a_line_arrives_in_order_past_failures_and_a_dead_letter(
    api, worker_factory
):
    """One key through a real worker: each event after the one before, through
    a retry and past a head that is dead-lettered; the unkeyed event beside
    them is not held up by the failing head."""
    worker_factory(WEBHOOK_RETRY_SCHEDULE="1")  # two attempts in a round
    # Event 2 fails once then succeeds; event 3 fails twice (dead letter).
    with WebhookReceiver(statuses=[200, 503, 200, 503, 503, 200]) as receiver:
        endpoint = create_endpoint(api, receiver.url, event_types=["order.updated"])
        items = [
            {"event_type": "order.updated", "payload": {"n": n}, "ordering_key": "k"}
            for n in range(1, 6)
        ]
        response = api.post(f"{EVENTS}/batch", {"events": items}, format="json")
        assert response.status_code == 202, response.content
        wait_until(
            lambda: (
                not Delivery.objects.filter(
                    endpoint_id=endpoint["id"],
                    status__in=[s for s in DeliveryStatus if s not in FINAL_STATUSES],
                ).exists()
            ),
            timeout=40,
        )
    arrivals = [(json.loads(r.body)["data"]["n"], r.status) for r in receiver.received]
    assert arrivals == [
        (1, 200),
        (2, 503),
        (2, 200),
        (3, 503),
        (3, 503),
        (4, 200),
        (5, 200),
    ]
    statuses = {d.event.payload["n"]: d.status for d in line(endpoint["id"], "k")}
    assert statuses == {
        1: "succeeded",
        2: "succeeded",
        3: "dead_letter",
        4: "succeeded",
        5: "succeeded",
    }
    # One at a time: the receiver never had two of the line at once.
    assert receiver.max_in_flight == 1


def test_e2e_a_failing_head_does_not_hold_other_keys_up(api, worker_factory):
    worker_factory(WEBHOOK_RETRY_SCHEDULE="30")
    with WebhookReceiver(statuses=[503, 200]) as receiver:
        endpoint = create_endpoint(api, receiver.url)
        publish(api, key="stuck", n=1)
        assert receiver.wait_for(1, timeout=20)
        publish(api, key="stuck", n=2)
        publish(api, key="other", n=3)
        publish(api, n=4)
        assert receiver.wait_for(3, timeout=20)
        arrived = sorted(json.loads(r.body)["data"]["n"] for r in receiver.received)
        assert arrived == [1, 3, 4]
        waiting = line(endpoint["id"], "stuck")[1]
        assert waiting.status == DeliveryStatus.PENDING
