"""platform.delivery.dead_lettered: one summary per endpoint and minute, once."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from deliveries import tasks
from deliveries.models import Delivery, Event
from deliveries.services.dead_letter_events import (
    LOOKBACK_WINDOWS,
    SETTLE,
    WINDOW,
    dead_letter_events_publish,
    window_start,
)
from deliveries.services.platform_events import DELIVERY_DEAD_LETTERED, iso
from deliveries.services.scheduling import dead_letter_fields
from tests.factories import make_endpoint, make_event, make_tenant
from webhooks_project import metrics

pytestmark = pytest.mark.django_db

S = timedelta(seconds=1)


@pytest.fixture
def t0():
    """The start of a window five minutes ago."""
    return window_start(timezone.now()) - 5 * WINDOW


def closed(moment):
    """A `now` by which the window of `moment` is summarised."""
    return window_start(moment) + WINDOW + SETTLE


def dead_letter(deliveries, at, reason="retries exhausted"):
    for delivery in deliveries:
        Delivery.objects.filter(pk=delivery.pk).update(
            **dead_letter_fields(reason=reason, now=at)
        )


def deliveries_to(endpoint, count, event_type="order.created"):
    """`count` events' deliveries to `endpoint` (and whoever else they match)."""
    found = []
    for _ in range(count):
        _, deliveries = make_event(tenant=endpoint.tenant, event_type=event_type)
        found += [d for d in deliveries if d.endpoint_id == endpoint.pk]
    return found


def summaries(tenant=None) -> list[Event]:
    events = Event.objects.filter(event_type=DELIVERY_DEAD_LETTERED)
    if tenant is not None:
        events = events.filter(tenant=tenant)
    return list(events.order_by("payload__first_at"))


def recipients(event: Event) -> set:
    return set(
        Delivery.objects.filter(event=event).values_list("endpoint_id", flat=True)
    )


def test_one_summary_per_endpoint_and_window_with_its_count(tenant, t0):
    # given: an endpoint with 3 dead letters in one window and 1 in the next
    failing = make_endpoint(tenant=tenant, event_types=["order.*", "platform.*"])
    subscriber = make_endpoint(tenant=tenant, event_types=["platform.*"])
    first, second, third, fourth = deliveries_to(failing, 4)
    dead_letter([first], t0 + 5 * S)
    dead_letter([second], t0 + 20 * S, reason="endpoint disabled: gone")
    dead_letter([third], t0 + 50 * S)
    dead_letter([fourth], t0 + 70 * S)
    # when
    published = dead_letter_events_publish(now=closed(t0 + 70 * S))
    # then
    assert published == 2
    one, two = summaries(tenant)
    assert one.payload == {
        "delivery_id": str(third.pk),  # the latest of the window
        "event_id": str(third.event_id),
        "endpoint_id": str(failing.pk),
        "reason": "retries exhausted",
        "consumer": None,
        "count": 3,
        "first_at": iso(t0 + 5 * S),
        "last_at": iso(t0 + 50 * S),
    }
    assert two.payload["count"] == 1
    assert two.payload["delivery_id"] == str(fourth.pk)
    assert two.payload["first_at"] == two.payload["last_at"] == iso(t0 + 70 * S)
    # never to the endpoint it is about
    assert recipients(one) == recipients(two) == {subscriber.pk}


def test_a_window_is_summarised_once_closed_and_settled(tenant, t0):
    failing = make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant, event_types=[DELIVERY_DEAD_LETTERED])
    early, late = deliveries_to(failing, 2)
    dead_letter([early], t0 + 10 * S)
    dead_letter([late], t0 + 65 * S)
    # while the window is open, or closed for less than SETTLE: nothing
    assert dead_letter_events_publish(now=t0 + 59 * S) == 0
    assert dead_letter_events_publish(now=t0 + WINDOW + SETTLE - S) == 0
    # then the first window only, then the second
    assert dead_letter_events_publish(now=t0 + WINDOW + SETTLE) == 1
    assert dead_letter_events_publish(now=t0 + 2 * WINDOW + SETTLE) == 1
    assert [event.payload["delivery_id"] for event in summaries(tenant)] == [
        str(early.pk),
        str(late.pk),
    ]


def test_runs_again_and_late_runs_publish_nothing_twice(tenant, t0):
    failing = make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant, event_types=["platform.delivery.*"])
    dead_letter(deliveries_to(failing, 2), t0 + 30 * S)
    assert dead_letter_events_publish(now=closed(t0)) == 1
    # when: the same run again, and every later run that still looks back at it
    for minutes in range(LOOKBACK_WINDOWS + 2):
        now = closed(t0) + minutes * WINDOW
        assert dead_letter_events_publish(now=now) == 0
    # then
    [event] = summaries(tenant)
    assert event.payload["count"] == 2


def test_a_missed_run_is_caught_up_within_the_look_back(tenant, t0):
    failing = make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant, event_types=["platform.*"])
    dead_letter(deliveries_to(failing, 1), t0)
    # beat was down: the first run comes LOOKBACK_WINDOWS - 1 minutes late
    late = closed(t0) + (LOOKBACK_WINDOWS - 1) * WINDOW
    assert dead_letter_events_publish(now=late) == 1


def test_a_window_past_the_look_back_is_not_summarised(tenant, t0):
    failing = make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant, event_types=["platform.*"])
    dead_letter(deliveries_to(failing, 1), t0)
    assert dead_letter_events_publish(now=closed(t0) + LOOKBACK_WINDOWS * WINDOW) == 0


def test_every_type_and_other_consumers_endpoints_get_no_summary(tenant, t0):
    failing = make_endpoint(tenant=tenant, consumer="acme", event_types=["order.*"])
    producers = make_endpoint(tenant=tenant, event_types=["platform.*"])
    acmes = make_endpoint(tenant=tenant, consumer="acme", event_types=["platform.*"])
    make_endpoint(tenant=tenant, consumer="globex", event_types=["platform.*"])
    make_endpoint(tenant=tenant, consumer="acme", event_types=["*"])
    make_endpoint(tenant=tenant, consumer="acme")
    make_endpoint(tenant=tenant, event_types=["platform.endpoint.*"])
    make_endpoint(tenant=make_tenant(), event_types=["platform.*"])
    dead_letter(deliveries_to(failing, 1), t0)
    # when
    assert dead_letter_events_publish(now=closed(t0)) == 1
    # then
    [event] = summaries()
    assert (event.tenant_id, event.consumer) == (tenant.pk, "acme")
    assert recipients(event) == {producers.pk, acmes.pk}


def test_no_summary_without_a_recipient(tenant, t0):
    failing = make_endpoint(tenant=tenant, event_types=["platform.*"])
    make_endpoint(tenant=tenant)  # every type, which is not asking for them
    dead_letter(deliveries_to(failing, 1), t0)
    assert dead_letter_events_publish(now=closed(t0)) == 0
    assert summaries() == []


def test_a_deleted_endpoints_dead_letters_are_not_summarised(api, tenant, t0):
    failing = make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant, event_types=["platform.*"])
    dead_letter(deliveries_to(failing, 1), t0)
    assert api.delete(f"/api/v1/endpoints/{failing.pk}").status_code == 204
    assert dead_letter_events_publish(now=closed(t0)) == 0


def test_dead_letters_of_platform_deliveries_make_no_summary(tenant, t0):
    # given: two endpoints that take platform events, and both fail everything
    one = make_endpoint(tenant=tenant, event_types=["order.*", "platform.*"])
    two = make_endpoint(tenant=tenant, event_types=["order.*", "platform.*"])
    _, deliveries = make_event(tenant=tenant)
    dead_letter(deliveries, t0)
    assert dead_letter_events_publish(now=closed(t0)) == 2
    about_one, about_two = (
        Event.objects.get(payload__endpoint_id=str(endpoint.pk))
        for endpoint in (one, two)
    )
    assert recipients(about_one) == {two.pk}
    assert recipients(about_two) == {one.pk}
    # when: each fails the summary about the other, minute after minute
    for minute in range(1, 5):
        platform = Delivery.objects.filter(
            event__event_type=DELIVERY_DEAD_LETTERED, dead_lettered_at__isnull=True
        )
        dead_letter(list(platform), t0 + minute * WINDOW)
        assert dead_letter_events_publish(now=closed(t0 + minute * WINDOW)) == 0
    # then: the two summaries of the one real failure, and no more
    assert len(summaries(tenant)) == 2


def test_the_beat_task_publishes_and_counts(tenant, django_capture_on_commit_callbacks):
    failing = make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant, event_types=["platform.*"])
    # dead-lettered in the window the task summarises next
    at = window_start(timezone.now() - SETTLE) - WINDOW
    dead_letter(deliveries_to(failing, 1), at)
    counter = metrics.PLATFORM_EVENTS.labels(type=DELIVERY_DEAD_LETTERED)
    before = counter._value.get()
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.publish_dead_letter_events() == 1
    assert counter._value.get() == before + 1


@pytest.mark.django_db(transaction=True)
def test_two_beats_at_once_publish_each_summary_once(t0):
    # given: dead letters of three endpoints
    tenant = make_tenant()
    make_endpoint(tenant=tenant, event_types=["platform.*"])
    for _ in range(3):
        failing = make_endpoint(tenant=tenant, event_types=["order.*"])
        dead_letter(deliveries_to(failing, 2), t0 + 10 * S)
    barrier = threading.Barrier(4)
    results = []

    def run():
        try:
            barrier.wait()
            results.append(dead_letter_events_publish(now=closed(t0)))
        finally:
            connection.close()

    # when: four runs at once (a second beat, overlapping runs)
    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then
    assert sum(results) == 3
    assert len(summaries(tenant)) == 3
