"""Test events: one ordinary event delivered to one endpoint, API and admin."""

import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deliveries.flow import refusals
from deliveries.leases import queued_lease
from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.services.test_events import endpoint_send_test
from subscriptions.models import Endpoint
from subscriptions.services import EndpointInactive
from tests.factories import make_endpoint
from tests.subscriptions.test_admin import messages_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint(tenant):
    return make_endpoint(tenant=tenant, event_types=["invoice.*"], consumer="acme")


def send(api, endpoint, body=None):
    return api.post(f"/api/v1/endpoints/{endpoint.pk}/test", body, format="json")


def test_send_test_records_an_event_and_one_pending_delivery(endpoint):
    # given: another endpoint that would take every type
    make_endpoint(tenant=endpoint.tenant)
    # when
    result = endpoint_send_test(endpoint=endpoint)
    # then
    event = Event.objects.get(pk=result.event.pk)
    assert (event.event_type, event.payload, event.consumer) == (
        "webhook.test",
        {},
        "acme",
    )
    [delivery] = Delivery.objects.filter(event=event)
    assert delivery.pk == result.delivery.pk
    assert delivery.endpoint_id == endpoint.pk
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.lease_expires_at == queued_lease(delivery.next_attempt_at)


def test_send_test_to_a_refusing_endpoint_waits_until_it_takes_deliveries(endpoint):
    # given: the endpoint refuses every delivery for a minute
    until = timezone.now() + timedelta(minutes=1)
    refusals.refusing(fresh=True)  # a reading of this second, which the note joins
    refusals.note_refusal(endpoint.pk, until)
    # when
    result = endpoint_send_test(endpoint=endpoint)
    # then: a waiting row, due when the refusal ends (the sweep publishes it)
    delivery = Delivery.objects.get(pk=result.delivery.pk)
    assert delivery.next_attempt_at == until
    assert delivery.lease_expires_at == until


def test_send_test_to_an_inactive_endpoint_raises_and_records_nothing(endpoint):
    Endpoint.objects.filter(pk=endpoint.pk).update(is_active=False)
    endpoint.refresh_from_db()
    with pytest.raises(EndpointInactive):
        endpoint_send_test(endpoint=endpoint)
    assert not Event.objects.filter(tenant=endpoint.tenant).exists()


def test_api_test_event_answers_202_with_the_ids(api, endpoint):
    # when
    response = send(api, endpoint, {"event_type": "invoice.t_1", "payload": {"a": 1}})
    # then
    assert response.status_code == 202, response.content
    answer = response.json()
    delivery = Delivery.objects.get(pk=answer["delivery"])
    assert str(delivery.event_id) == answer["event"]
    assert delivery.event.event_type == "invoice.t_1"
    assert delivery.event.payload == {"a": 1}
    assert int(response["RateLimit-Limit"]) >= 1
    listed = api.get("/api/v1/deliveries", {"endpoint": str(endpoint.pk)}).json()
    assert [d["id"] for d in listed["results"]] == [answer["delivery"]]


def test_api_test_event_without_a_body_uses_the_defaults(api, endpoint):
    response = api.post(f"/api/v1/endpoints/{endpoint.pk}/test")
    assert response.status_code == 202, response.content
    event = Event.objects.get(pk=response.json()["event"])
    assert (event.event_type, event.payload) == ("webhook.test", {})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_type": "bad type"}, "event_type"),
        ({"event_type": "x" * 256}, "event_type"),
        ({"event_type": 12}, "event_type"),
        ({"event_type": ""}, "event_type"),
        ({"payload": [1, 2]}, "payload"),
        ({"payload": "text"}, "payload"),
        ({"payload": {"a": "\x00"}}, "payload"),
    ],
)
def test_api_test_event_rejects_bad_input_naming_the_field(api, endpoint, body, field):
    response = send(api, endpoint, body)
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Event.objects.filter(tenant=endpoint.tenant).exists()


def test_api_test_event_to_an_inactive_endpoint_is_409(api, endpoint):
    api.patch(f"/api/v1/endpoints/{endpoint.pk}", {"is_active": False}, format="json")
    response = send(api, endpoint)
    assert response.status_code == 409
    assert set(response.json()) == {"detail"}
    assert not Event.objects.filter(tenant=endpoint.tenant).exists()


def test_api_test_event_to_a_foreign_or_unknown_endpoint_is_404(
    other_api, api, endpoint
):
    foreign = send(other_api, endpoint)
    unknown = api.post(f"/api/v1/endpoints/{uuid.uuid4()}/test", {}, format="json")
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()
    assert not Event.objects.exists()


def test_api_test_event_takes_from_the_tenants_event_rate_limit(api, tenant, endpoint):
    # given: a burst of two events
    tenant.rate_limit = 1
    tenant.save()
    # when
    statuses = [send(api, endpoint).status_code for _ in range(3)]
    # then
    assert statuses == [202, 202, 429]
    limited = send(api, endpoint)
    assert int(limited["Retry-After"]) >= 1
    assert limited["RateLimit-Limit"] == "2"
    assert limited["RateLimit-Remaining"] == "0"
    assert Event.objects.filter(tenant=tenant).count() == 2


def test_admin_send_test_event_action_skips_inactive_endpoints(admin_client, endpoint):
    # given
    off = make_endpoint(tenant=endpoint.tenant, is_active=False)
    # when
    response = admin_client.post(
        reverse("admin:subscriptions_endpoint_changelist"),
        {
            "action": "send_test_event",
            "_selected_action": [str(endpoint.pk), str(off.pk)],
            "index": 0,
        },
        follow=True,
    )
    # then
    assert response.status_code == 200
    [message] = messages_of(response)
    assert "Sent a test event to 1 endpoint." in message
    assert "Skipped 1 inactive endpoint." in message
    [delivery] = Delivery.objects.filter(tenant=endpoint.tenant)
    assert delivery.endpoint_id == endpoint.pk
    assert delivery.event.event_type == "webhook.test"
