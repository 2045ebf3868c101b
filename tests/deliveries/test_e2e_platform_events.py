"""Operational events end to end: a real worker, real receivers, signed requests."""

import json
from collections import Counter
from datetime import timedelta

import pytest
import standardwebhooks
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.receiver import WebhookReceiver
from deliveries.services.dead_letter_events import (
    SETTLE,
    WINDOW,
    dead_letter_events_publish,
)
from deliveries.services.platform_events import DELIVERY_DEAD_LETTERED
from tests.conftest import wait_until
from tests.deliveries.test_e2e_worker import create_endpoint, final, publish

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def platform_requests(receiver, event_type):
    return [
        request
        for request in receiver.received
        if json.loads(request.body)["type"] == event_type
    ]


def dead_letter_to(event, endpoint):
    """A wait_until predicate: the event's delivery to `endpoint` is a dead letter."""

    def check():
        return Delivery.objects.filter(
            event_id=event["id"],
            endpoint_id=endpoint["id"],
            status=DeliveryStatus.DEAD_LETTER,
        ).exists()

    return check


def verified(request, secret) -> dict:
    """The request's body, once its signature is checked as a receiver would."""
    standardwebhooks.Webhook(secret).verify(request.body.decode(), request.headers)
    return json.loads(request.body)


def test_e2e_410_tells_the_subscriber_and_not_the_gone_endpoint(api, worker_factory):
    worker_factory()
    with (
        WebhookReceiver(statuses=[410]) as gone_receiver,
        WebhookReceiver() as subscriber_receiver,
        WebhookReceiver() as everything_receiver,
    ):
        gone = create_endpoint(
            api, gone_receiver.url, event_types=["order.*", "platform.*"]
        )
        subscriber = create_endpoint(
            api, subscriber_receiver.url, event_types=["platform.endpoint.disabled"]
        )
        create_endpoint(api, everything_receiver.url, event_types=["*"])
        # when: the receiver answers 410 Gone
        event = publish(api)
        wait_until(dead_letter_to(event, gone))
        assert subscriber_receiver.wait_for(1, timeout=20)
        # then: a signed platform.endpoint.disabled about it
        [request] = subscriber_receiver.received
        body = verified(request, subscriber["secret"])
        assert body["type"] == "platform.endpoint.disabled"
        assert body["data"]["endpoint_id"] == gone["id"]
        assert body["data"]["url"] == gone_receiver.url
        assert body["data"]["reason"] == "receiver answered 410 Gone"
        shown = api.get(f"/api/v1/events/{body['id']}").json()
        assert shown["event_type"] == "platform.endpoint.disabled"
        # the disabled endpoint had its order event only; `*` never asked for it
        assert len(gone_receiver.received) == 1
        assert platform_requests(everything_receiver, body["type"]) == []


def test_e2e_failing_too_long_tells_the_subscriber(api, worker_factory):
    worker_factory(WEBHOOK_DISABLE_AFTER="1", WEBHOOK_RETRY_SCHEDULE="2,2,2")
    with (
        WebhookReceiver(statuses=[500]) as failing_receiver,
        WebhookReceiver() as subscriber_receiver,
    ):
        failing = create_endpoint(api, failing_receiver.url, event_types=["order.*"])
        subscriber = create_endpoint(
            api, subscriber_receiver.url, event_types=["platform.*"]
        )
        event = publish(api)
        wait_until(final(event["id"], DeliveryStatus.DEAD_LETTER), timeout=30)
        assert subscriber_receiver.wait_for(1, timeout=20)
        [request] = subscriber_receiver.received
        body = verified(request, subscriber["secret"])
    assert body["type"] == "platform.endpoint.disabled"
    assert body["data"]["endpoint_id"] == failing["id"]
    assert body["data"]["reason"].startswith("no successful delivery for")
    assert api.get(f"/api/v1/endpoints/{failing['id']}").json()["is_active"] is False


def test_e2e_dead_letters_summarised_once_and_no_loop(api, worker_factory):
    # given: two endpoints that take orders and platform events and fail all
    worker_factory(WEBHOOK_RETRY_SCHEDULE="1")
    with (
        WebhookReceiver(statuses=[500]) as one_receiver,
        WebhookReceiver(statuses=[500]) as two_receiver,
        WebhookReceiver() as subscriber_receiver,
    ):
        types = ["order.*", "platform.*"]
        one = create_endpoint(api, one_receiver.url, event_types=types)
        two = create_endpoint(api, two_receiver.url, event_types=types)
        subscriber = create_endpoint(
            api, subscriber_receiver.url, event_types=[DELIVERY_DEAD_LETTERED]
        )
        events = [publish(api) for _ in range(3)]
        ids = {event["id"] for event in events}
        wait_until(
            lambda: (
                Delivery.objects.filter(
                    event_id__in=ids, status=DeliveryStatus.DEAD_LETTER
                ).count()
                == 6
            ),
            timeout=30,
        )
        # when: the minute's summaries (the beat task, its window closed)
        later = timezone.now() + WINDOW + SETTLE
        published = dead_letter_events_publish(now=later)
        # one per endpoint and minute: a minute's end may split a burst in two
        assert 2 <= published <= 4
        # then: the subscriber hears of each endpoint's 3 dead letters
        assert subscriber_receiver.wait_for(published, timeout=20)
        bodies = [
            verified(request, subscriber["secret"])
            for request in subscriber_receiver.received
        ]
        assert {body["type"] for body in bodies} == {DELIVERY_DEAD_LETTERED}
        counts = Counter()
        for body in bodies:
            counts[body["data"]["endpoint_id"]] += body["data"]["count"]
        assert counts == {one["id"]: 3, two["id"]: 3}
        # and each failing endpoint had the summaries about the other, and failed
        wait_until(
            lambda: (
                Delivery.objects.filter(
                    event__event_type=DELIVERY_DEAD_LETTERED,
                    status=DeliveryStatus.DEAD_LETTER,
                ).count()
                == published
            ),
            timeout=30,
        )
        for receiver, other in ((one_receiver, two), (two_receiver, one)):
            about = [
                json.loads(r.body)["data"]["endpoint_id"]
                for r in platform_requests(receiver, DELIVERY_DEAD_LETTERED)
            ]
            assert set(about) == {other["id"]}
        # when: the later minutes are summarised, as beat would
        for minutes in range(1, 4):
            assert (
                dead_letter_events_publish(now=later + timedelta(minutes=minutes)) == 0
            )
    # then: the platform events stay those of the real failures
    assert Event.objects.filter(event_type__startswith="platform.").count() == published
