"""Recovery: an endpoint's dead letters and missed events of a window, once."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.services.ingest import event_ingest
from deliveries.services.recovery import endpoint_recover
from subscriptions.models import Endpoint
from subscriptions.services import EndpointInactive
from tests.factories import make_endpoint, make_event, make_tenant

pytestmark = pytest.mark.django_db


def ingest(tenant, event_type="order.created", consumer=None):
    return event_ingest(
        tenant=tenant, event_type=event_type, payload={"n": 1}, consumer=consumer
    ).event


def switched_on(endpoint: Endpoint) -> Endpoint:
    Endpoint.objects.filter(pk=endpoint.pk).update(is_active=True)
    endpoint.refresh_from_db()
    return endpoint


def delivered_events(endpoint) -> set:
    return set(
        Delivery.objects.filter(endpoint=endpoint).values_list("event_id", flat=True)
    )


@pytest.fixture
def since():
    return timezone.now() - timedelta(seconds=1)


def test_recover_creates_the_missed_deliveries_once(tenant, since):
    # given: events published while the endpoint was off
    endpoint = make_endpoint(tenant=tenant, is_active=False)
    missed = {ingest(tenant).pk for _ in range(3)}
    endpoint = switched_on(endpoint)
    # when
    result = endpoint_recover(endpoint=endpoint, since=since)
    # then
    assert (result.replayed, result.created, result.remaining) == (0, 3, 0)
    assert result.as_response() == {"replayed": 0, "created": 3}
    assert delivered_events(endpoint) == missed
    for delivery in Delivery.objects.filter(endpoint=endpoint):
        assert delivery.status == DeliveryStatus.PENDING
        assert delivery.tenant_id == tenant.pk
        assert delivery.lease_expires_at > delivery.next_attempt_at  # queued
    # when: again
    again = endpoint_recover(endpoint=endpoint, since=since)
    # then
    assert (again.replayed, again.created, again.remaining) == (0, 0, 0)
    assert Delivery.objects.filter(endpoint=endpoint).count() == 3


def test_recover_reaches_events_from_before_the_endpoint_existed(tenant, since):
    event = ingest(tenant)
    endpoint = make_endpoint(tenant=tenant)
    assert endpoint_recover(endpoint=endpoint, since=since).created == 1
    assert delivered_events(endpoint) == {event.pk}


def test_recover_keeps_to_the_window(tenant):
    # given: events before, in and after the window
    endpoint = make_endpoint(tenant=tenant, is_active=False)
    ingest(tenant)
    since = timezone.now()
    inside = ingest(tenant)
    until = timezone.now()
    ingest(tenant)
    endpoint = switched_on(endpoint)
    # when
    result = endpoint_recover(endpoint=endpoint, since=since, until=until)
    # then
    assert result.created == 1
    assert delivered_events(endpoint) == {inside.pk}


def test_recover_of_a_future_or_empty_window_does_nothing(tenant, since):
    endpoint = make_endpoint(tenant=tenant, is_active=False)
    ingest(tenant)
    endpoint = switched_on(endpoint)
    later = timezone.now() + timedelta(days=1)
    assert endpoint_recover(endpoint=endpoint, since=later).created == 0
    assert endpoint_recover(endpoint=endpoint, since=since, until=since).created == 0
    assert delivered_events(endpoint) == set()


def test_recover_never_includes_another_tenants_events(tenant, since):
    # given: another tenant's event of the same type, in the window
    foreign = ingest(make_tenant())
    endpoint = make_endpoint(tenant=tenant, is_active=False)
    mine = ingest(tenant)
    endpoint = switched_on(endpoint)
    # when
    result = endpoint_recover(endpoint=endpoint, since=since)
    # then
    assert result.created == 1
    assert delivered_events(endpoint) == {mine.pk}
    assert foreign.pk not in delivered_events(endpoint)


def test_recover_follows_the_consumer_rules(tenant, since):
    # given: events without a consumer, for acme and for globex
    acme = make_endpoint(tenant=tenant, consumer="acme", is_active=False)
    own = make_endpoint(tenant=tenant, is_active=False)
    for_all = ingest(tenant)
    for_acme = ingest(tenant, consumer="acme")
    ingest(tenant, consumer="globex")
    acme, own = switched_on(acme), switched_on(own)
    # when
    endpoint_recover(endpoint=acme, since=since)
    endpoint_recover(endpoint=own, since=since)
    # then: a consumer's endpoint gets its own and the unaddressed events; an
    # endpoint without a consumer only the unaddressed ones
    assert delivered_events(acme) == {for_all.pk, for_acme.pk}
    assert delivered_events(own) == {for_all.pk}


def test_recover_matches_event_types_like_the_fan_out(tenant, since):
    # given: an exact type and a wildcard whose prefix has an underscore
    endpoint = make_endpoint(
        tenant=tenant, event_types=["order_v1.*", "invoice.paid"], is_active=False
    )
    wanted = {
        ingest(tenant, "order_v1.created").pk,
        ingest(tenant, "order_v1.created.eu").pk,
        ingest(tenant, "invoice.paid").pk,
    }
    for unwanted in ("orderXv1.created", "order_v1", "order_v10.created"):
        ingest(tenant, unwanted)
    for unwanted in ("invoice.paid.late", "invoice", "x.order_v1.created"):
        ingest(tenant, unwanted)
    endpoint = switched_on(endpoint)
    # when
    result = endpoint_recover(endpoint=endpoint, since=since)
    # then
    assert result.created == 3
    assert delivered_events(endpoint) == wanted


def test_recover_replays_the_windows_dead_letters(tenant):
    # given: a dead letter of an event before the window and one inside it
    endpoint = make_endpoint(tenant=tenant)
    _, [old] = make_event(tenant=tenant)
    since = timezone.now()
    _, [recent] = make_event(tenant=tenant)
    Delivery.objects.filter(pk__in=[old.pk, recent.pk]).update(
        status=DeliveryStatus.DEAD_LETTER, dead_lettered_at=timezone.now()
    )
    # when
    result = endpoint_recover(endpoint=endpoint, since=since)
    # then
    assert (result.replayed, result.created) == (1, 0)
    assert Delivery.objects.get(pk=recent.pk).status == DeliveryStatus.PENDING
    assert Delivery.objects.get(pk=old.pk).status == DeliveryStatus.DEAD_LETTER


def test_recover_is_bounded_and_says_what_remains(tenant, since, settings):
    # given: two dead letters and four missed events, three per call
    settings.WEBHOOK_REPLAY_MAX = 3
    endpoint = make_endpoint(tenant=tenant)
    dead = [make_event(tenant=tenant)[1][0].pk for _ in range(2)]
    Delivery.objects.filter(pk__in=dead).update(
        status=DeliveryStatus.DEAD_LETTER, dead_lettered_at=timezone.now()
    )
    Endpoint.objects.filter(pk=endpoint.pk).update(is_active=False)
    for _ in range(4):
        ingest(tenant)
    endpoint = switched_on(endpoint)
    # when / then: the dead letters first, then the oldest missed events
    first = endpoint_recover(endpoint=endpoint, since=since)
    assert (first.replayed, first.created, first.remaining) == (2, 1, 3)
    assert first.as_response() == {"replayed": 2, "created": 1, "remaining": 3}
    second = endpoint_recover(endpoint=endpoint, since=since)
    assert (second.replayed, second.created, second.remaining) == (0, 3, 0)
    third = endpoint_recover(endpoint=endpoint, since=since)
    assert (third.replayed, third.created, third.remaining) == (0, 0, 0)
    assert Delivery.objects.filter(endpoint=endpoint).count() == 6


def test_recover_of_an_inactive_endpoint_raises(tenant, since):
    endpoint = make_endpoint(tenant=tenant, is_active=False)
    ingest(tenant)
    with pytest.raises(EndpointInactive):
        endpoint_recover(endpoint=endpoint, since=since)
    assert delivered_events(endpoint) == set()


def recover(api, endpoint_id, body):
    return api.post(f"/api/v1/endpoints/{endpoint_id}/recover", body, format="json")


def test_api_recover_answers_202_with_the_counts(api, tenant, since, settings):
    # given
    settings.WEBHOOK_REPLAY_MAX = 2
    endpoint = make_endpoint(tenant=tenant, is_active=False)
    for _ in range(3):
        ingest(tenant)
    endpoint = switched_on(endpoint)
    until = timezone.now() + timedelta(minutes=1)
    body = {"since": since.isoformat(), "until": until.isoformat()}
    # when
    first = recover(api, endpoint.pk, body)
    second = recover(api, endpoint.pk, body)
    third = recover(api, endpoint.pk, {"since": since.isoformat()})
    # then
    assert first.status_code == 202, first.content
    assert first.json() == {"replayed": 0, "created": 2, "remaining": 1}
    assert second.json() == {"replayed": 0, "created": 1}
    assert third.json() == {"replayed": 0, "created": 0}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"since": 12}, "since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00Z", "until": "not a date"}, "until"),
    ],
)
def test_api_recover_rejects_bad_input_naming_the_field(api, tenant, body, field):
    endpoint = make_endpoint(tenant=tenant)
    response = recover(api, endpoint.pk, body)
    assert response.status_code == 400, response.content
    assert field in response.json()


@pytest.mark.parametrize(
    "body",
    [
        {"since": "9999-12-31T23:59:59Z"},
        {"since": "0001-01-01T00:00:00Z", "until": "0001-01-01T00:00:01Z"},
        {"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"},
    ],
)
def test_api_recover_of_extreme_windows_is_no_error(api, tenant, body):
    endpoint = make_endpoint(tenant=tenant)
    response = recover(api, endpoint.pk, body)
    assert response.status_code == 202, response.content


def test_api_recover_of_an_inactive_endpoint_is_409(api, tenant, since):
    endpoint = make_endpoint(tenant=tenant, is_active=False)
    response = recover(api, endpoint.pk, {"since": since.isoformat()})
    assert response.status_code == 409
    assert set(response.json()) == {"detail"}


def test_api_recover_of_a_foreign_or_unknown_endpoint_is_404(
    api, other_api, tenant, since
):
    endpoint = make_endpoint(tenant=tenant, is_active=False)
    ingest(tenant)
    switched_on(endpoint)
    body = {"since": since.isoformat()}
    foreign = recover(other_api, endpoint.pk, body)
    unknown = recover(api, uuid.uuid4(), body)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()
    assert delivered_events(endpoint) == set()


def test_api_replay_missed_still_replays_what_the_endpoint_missed(api, tenant):
    # given: a delivery dead-lettered because its endpoint was disabled
    endpoint = make_endpoint(tenant=tenant)
    _, [delivery] = make_event(tenant=tenant)
    path = f"/api/v1/endpoints/{endpoint.pk}"
    api.patch(path, {"is_active": False}, format="json")
    assert Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.DEAD_LETTER
    api.patch(path, {"is_active": True}, format="json")
    # when
    response = api.post(f"{path}/replay-missed")
    # then
    assert response.status_code == 202
    assert response.json() == {"replayed": 1}


def test_recover_leaves_events_at_the_edge_of_their_retention_to_the_purge(tenant):
    # given: a one-day retention, an event 23.5 hours old and one just made,
    # neither delivered to the endpoint
    from tenants.models import Tenant
    from webhooks_project.ids import uuid7_floor

    Tenant.objects.filter(pk=tenant.pk).update(retention_days=1)
    tenant.refresh_from_db()
    endpoint = make_endpoint(tenant=tenant)
    old_time = timezone.now() - timedelta(hours=23, minutes=30)
    events = [
        Event.objects.create(
            tenant=tenant, event_type="order.created", payload={}, request_hash=""
        )
        for _ in range(2)
    ]
    Event.objects.filter(pk=events[0].pk).update(
        id=uuid7_floor(old_time), created_at=old_time
    )
    # when: a recovery of the last two days
    result = endpoint_recover(
        endpoint=endpoint, since=timezone.now() - timedelta(days=2)
    )
    # then: only the fresh one gets a delivery; the old one is the purge's
    assert result.created == 1
    assert list(Delivery.objects.values_list("event_id", flat=True)) == [events[1].pk]
