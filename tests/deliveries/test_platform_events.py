"""Operational events: who receives them, once per disable, never for producers."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.flow import refusals
from deliveries.models import Delivery, Event
from deliveries.services.endpoint_health import (
    endpoint_deactivate,
    endpoint_record_failure,
)
from deliveries.services.platform_events import (
    DELIVERY_DEAD_LETTERED,
    ENDPOINT_DISABLED,
    iso,
)
from deliveries.services.recording import GONE_REASON
from deliveries.services.recovery import endpoint_recover
from subscriptions.models import Endpoint
from tests.factories import make_endpoint, make_tenant
from webhooks_project import metrics

pytestmark = pytest.mark.django_db


def disabled_events(tenant) -> list[Event]:
    return list(Event.objects.filter(tenant=tenant, event_type=ENDPOINT_DISABLED))


def recipients(event: Event) -> set:
    return set(
        Delivery.objects.filter(event=event).values_list("endpoint_id", flat=True)
    )


def platform_count(event_type: str) -> float:
    return metrics.PLATFORM_EVENTS.labels(type=event_type)._value.get()


@pytest.mark.parametrize(
    "event_type",
    [
        ENDPOINT_DISABLED,
        DELIVERY_DEAD_LETTERED,
        "platform.anything",
        "Platform.Endpoint.Disabled",
        "PLATFORM.x",
    ],
)
def test_producers_cannot_publish_platform_types(api, event_type):
    body = {"event_type": event_type, "payload": {}}
    response = api.post("/api/v1/events", body, format="json")
    assert response.status_code == 400, response.content
    assert "reserved" in response.json()["event_type"][0]
    assert not Event.objects.exists()


@pytest.mark.parametrize("event_type", ["platforms.x", "platform", "my.platform.x"])
def test_types_merely_like_platform_ones_publish(api, event_type):
    body = {"event_type": event_type, "payload": {}}
    response = api.post("/api/v1/events", body, format="json")
    assert response.status_code == 202, response.content


def test_test_event_of_a_platform_type_is_refused(api, tenant):
    endpoint = make_endpoint(tenant=tenant)
    response = api.post(
        f"/api/v1/endpoints/{endpoint.pk}/test",
        {"event_type": ENDPOINT_DISABLED},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert "event_type" in response.json()
    assert not Event.objects.exists()


def test_endpoints_may_subscribe_to_platform_types(api):
    for event_types in (["platform.*"], [ENDPOINT_DISABLED], ["platform.endpoint.*"]):
        response = api.post(
            "/api/v1/endpoints",
            {"url": "http://127.0.0.1:9/", "event_types": event_types},
            format="json",
        )
        assert response.status_code == 201, response.content
        assert response.json()["event_types"] == event_types


def test_disable_publishes_to_the_endpoints_that_name_platform_types_only(
    tenant, django_capture_on_commit_callbacks
):
    # given: the endpoint about to be disabled, and every kind of neighbour
    gone = make_endpoint(
        tenant=tenant, url="http://127.0.0.1:9/gone", event_types=["platform.*"]
    )
    wanted = [
        make_endpoint(tenant=tenant, event_types=["platform.*"]),
        make_endpoint(tenant=tenant, event_types=[ENDPOINT_DISABLED]),
        make_endpoint(tenant=tenant, event_types=["order.*", "platform.endpoint.*"]),
    ]
    make_endpoint(tenant=tenant, event_types=["*"])
    make_endpoint(tenant=tenant)  # empty: every type
    make_endpoint(tenant=tenant, event_types=["order.*"])
    make_endpoint(tenant=tenant, event_types=[DELIVERY_DEAD_LETTERED])
    make_endpoint(tenant=tenant, event_types=["platform.*"], is_active=False)
    make_endpoint(tenant=tenant, event_types=["platform.*"], consumer="acme")
    make_endpoint(tenant=make_tenant(), event_types=["platform.*"])
    before = platform_count(ENDPOINT_DISABLED)
    # when: the receiver answered 410
    with django_capture_on_commit_callbacks(execute=True):
        endpoint_deactivate(endpoint_id=gone.pk, reason=GONE_REASON)
    # then
    gone.refresh_from_db()
    [event] = disabled_events(tenant)
    assert event.payload == {
        "endpoint_id": str(gone.pk),
        "url": "http://127.0.0.1:9/gone",
        "reason": GONE_REASON,
        "consumer": None,
        "disabled_at": iso(gone.disabled_at),
    }
    assert event.consumer is None
    assert recipients(event) == {endpoint.pk for endpoint in wanted}
    assert Event.objects.count() == 1  # nothing in the other tenant's stream
    assert platform_count(ENDPOINT_DISABLED) == before + 1


def test_a_consumers_endpoint_is_told_to_its_consumer_and_the_producer_only(tenant):
    gone = make_endpoint(tenant=tenant, consumer="acme")
    producers = make_endpoint(tenant=tenant, event_types=["platform.*"])
    acmes = make_endpoint(tenant=tenant, event_types=["platform.*"], consumer="acme")
    make_endpoint(tenant=tenant, event_types=["platform.*"], consumer="globex")
    # when
    endpoint_deactivate(endpoint_id=gone.pk, reason=GONE_REASON)
    # then
    [event] = disabled_events(tenant)
    assert event.consumer == "acme"
    assert event.payload["consumer"] == "acme"
    assert recipients(event) == {producers.pk, acmes.pk}


def test_a_producers_endpoint_is_never_told_to_a_consumer(tenant):
    gone = make_endpoint(tenant=tenant)
    producers = make_endpoint(tenant=tenant, event_types=["platform.*"])
    make_endpoint(tenant=tenant, event_types=["platform.*"], consumer="acme")
    endpoint_deactivate(endpoint_id=gone.pk, reason=GONE_REASON)
    [event] = disabled_events(tenant)
    assert recipients(event) == {producers.pk}


def test_one_event_per_disable(api, tenant):
    gone = make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant, event_types=["platform.*"])
    endpoint_deactivate(endpoint_id=gone.pk, reason=GONE_REASON)
    # when: disabled again (a second 410 of a delivery that was in flight)
    endpoint_deactivate(endpoint_id=gone.pk, reason=GONE_REASON)
    # then
    assert len(disabled_events(tenant)) == 1
    # when: enabled by the tenant and disabled again by the platform
    response = api.patch(
        f"/api/v1/endpoints/{gone.pk}", {"is_active": True}, format="json"
    )
    assert response.status_code == 200
    endpoint_deactivate(endpoint_id=gone.pk, reason=GONE_REASON)
    # then: a second disable, a second event
    assert len(disabled_events(tenant)) == 2


def test_failing_too_long_publishes_the_disable(tenant, settings):
    settings.WEBHOOK_DISABLE_AFTER = 5 * 86400
    failing = make_endpoint(tenant=tenant)
    subscriber = make_endpoint(tenant=tenant, event_types=["platform.endpoint.*"])
    assert endpoint_record_failure(endpoint=failing) is False  # starts the run
    Endpoint.objects.filter(pk=failing.pk).update(
        failing_since=failing.failing_since.replace(year=2000)
    )
    failing.refresh_from_db()
    # when
    assert endpoint_record_failure(endpoint=failing) is True
    # then
    [event] = disabled_events(tenant)
    assert event.payload["reason"] == "no successful delivery for 5 days"
    assert event.payload["endpoint_id"] == str(failing.pk)
    assert recipients(event) == {subscriber.pk}


def test_the_tenant_disabling_its_endpoint_publishes_nothing(api, tenant):
    endpoint = make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant, event_types=["platform.*"])
    response = api.patch(
        f"/api/v1/endpoints/{endpoint.pk}", {"is_active": False}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["is_active"] is False
    assert disabled_events(tenant) == []


def test_no_event_when_nobody_would_receive_it(tenant):
    gone = make_endpoint(tenant=tenant, event_types=["platform.*"])
    make_endpoint(tenant=tenant, event_types=["*"])
    endpoint_deactivate(endpoint_id=gone.pk, reason=GONE_REASON)
    assert disabled_events(tenant) == []
    assert Endpoint.objects.get(pk=gone.pk).is_active is False  # disabled all same


def test_recovery_follows_the_platform_rule(tenant):
    # given: a disable published while these endpoints were off
    gone = make_endpoint(tenant=tenant, event_types=["platform.*"], consumer="acme")
    make_endpoint(tenant=tenant, event_types=["platform.*"])  # a live subscriber
    late = make_endpoint(tenant=tenant, event_types=["platform.*"], is_active=False)
    everything = make_endpoint(tenant=tenant, is_active=False)
    other = make_endpoint(
        tenant=tenant, event_types=["platform.*"], consumer="globex", is_active=False
    )
    since = Endpoint.objects.get(pk=gone.pk).created_at
    endpoint_deactivate(endpoint_id=gone.pk, reason=GONE_REASON)
    [event] = disabled_events(tenant)
    Endpoint.objects.update(is_active=True)
    # when / then: the producer's subscriber gets what it missed
    assert endpoint_recover(endpoint=reload(late), since=since).created == 1
    assert recipients(event) >= {late.pk}
    # and neither an every-type endpoint, another consumer's, nor the one it is about
    for endpoint in (everything, other, gone):
        assert endpoint_recover(endpoint=reload(endpoint), since=since).created == 0
    assert not recipients(event) & {everything.pk, other.pk, gone.pk}


def reload(endpoint: Endpoint) -> Endpoint:
    endpoint.refresh_from_db()
    return endpoint


def test_a_refusing_subscriber_gets_its_platform_delivery_when_it_takes_them(tenant):
    # given: a subscriber that refuses every delivery for a minute
    gone = make_endpoint(tenant=tenant)
    subscriber = make_endpoint(tenant=tenant, event_types=["platform.*"])
    until = timezone.now() + timedelta(minutes=1)
    refusals.refusing(fresh=True)  # a reading of this second, which the note joins
    refusals.note_refusal(subscriber.pk, until)
    # when
    endpoint_deactivate(endpoint_id=gone.pk, reason=GONE_REASON)
    # then: a waiting row, due when the refusal ends (the sweep publishes it)
    [event] = disabled_events(tenant)
    delivery = Delivery.objects.get(event=event)
    assert delivery.endpoint_id == subscriber.pk
    assert delivery.next_attempt_at == delivery.lease_expires_at == until


def test_every_type_and_the_platform_ones_are_kept_together(api, tenant):
    # given: an endpoint that wants all of the tenant's events and platform ones
    response = api.post(
        "/api/v1/endpoints",
        {"url": "http://127.0.0.1:9/all", "event_types": ["*", "platform.*"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["event_types"] == ["*", "platform.*"]
    both = Endpoint.objects.get(pk=response.json()["id"])
    # when: an ordinary event, then a platform one about another endpoint
    published = api.post(
        "/api/v1/events", {"event_type": "order.created", "payload": {}}, format="json"
    )
    gone = make_endpoint(tenant=tenant)
    endpoint_deactivate(endpoint_id=gone.pk, reason=GONE_REASON)
    # then: it gets both
    assert published.json()["deliveries"] == 1
    [event] = disabled_events(tenant)
    assert recipients(event) == {both.pk}


def test_a_platform_type_stored_before_with_an_odd_payload_does_not_break_recovery(
    tenant,
):
    # given: a v1 event of a platform type (producers could publish them then)
    # whose endpoint_id is no UUID, in the window of a recovery
    Event.objects.create(
        tenant=tenant,
        event_type=ENDPOINT_DISABLED,
        payload={"endpoint_id": "not-a-uuid"},
        request_hash="",
    )
    endpoint = make_endpoint(tenant=tenant, event_types=["platform.*"])
    # when
    result = endpoint_recover(
        endpoint=endpoint, since=timezone.now() - timedelta(hours=1)
    )
    # then: it matches like any platform event about another endpoint
    assert result.created == 1
