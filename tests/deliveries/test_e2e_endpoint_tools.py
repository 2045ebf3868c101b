"""End to end with a real worker and receiver: consumers, test events, recovery."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus
from tests.conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def create_endpoint(api, url, **fields):
    response = api.post("/api/v1/endpoints", {"url": url, **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def publish(api, event_type="order.created", **fields):
    body = {"event_type": event_type, "payload": {"n": 1}, **fields}
    response = api.post(
        "/api/v1/events", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 202, response.content
    return response.json()


def all_succeeded(**filters):
    def check():
        statuses = list(
            Delivery.objects.filter(**filters).values_list("status", flat=True)
        )
        return statuses and all(s == DeliveryStatus.SUCCEEDED for s in statuses)

    return check


def test_e2e_event_with_a_consumer_reaches_only_that_consumers_endpoints(
    api, receiver, worker_factory
):
    # given: endpoints of two consumers and one of the producer's own
    worker_factory()
    acme = create_endpoint(api, receiver.url + "acme", consumer="acme")
    globex = create_endpoint(api, receiver.url + "globex", consumer="globex")
    own = create_endpoint(api, receiver.url + "own")
    receiver.secrets = (acme["secret"], globex["secret"], own["secret"])
    # when: one event for acme, then one for everybody
    for_acme = publish(api, consumer="acme")
    wait_until(all_succeeded(event_id=for_acme["id"]))
    for_all = publish(api)
    wait_until(all_succeeded(event_id=for_all["id"]))
    assert receiver.wait_for(4)
    # then
    paths = {}
    for request in receiver.received:
        assert request.verified is True
        paths.setdefault(request.header("webhook-id"), set()).add(request.path)
    assert paths == {
        for_acme["id"]: {"/acme"},
        for_all["id"]: {"/acme", "/globex", "/own"},
    }


def test_e2e_test_event_is_signed_and_delivered_to_that_endpoint_only(
    api, receiver, worker_factory
):
    # given: an endpoint whose filters and consumer would not take the event
    worker_factory()
    endpoint = create_endpoint(
        api, receiver.url + "hook", event_types=["invoice.*"], consumer="acme"
    )
    create_endpoint(api, receiver.url + "other")
    receiver.secrets = (endpoint["secret"],)
    # when
    response = api.post(f"/api/v1/endpoints/{endpoint['id']}/test", format="json")
    # then
    assert response.status_code == 202, response.content
    answer = response.json()
    assert set(answer) == {"event", "delivery"}
    wait_until(all_succeeded(pk=answer["delivery"]))
    [request] = receiver.received
    assert request.path == "/hook"
    assert request.verified is True
    body = json.loads(request.body)
    assert body["type"] == "webhook.test"
    assert body["data"] == {}
    assert body["id"] == answer["event"] == request.header("webhook-id")
    event = api.get(f"/api/v1/events/{answer['event']}").json()
    assert event["consumer"] == "acme"
    assert event["deliveries"] == 1


def test_e2e_recover_delivers_what_the_endpoint_missed_once(
    api, receiver, worker_factory
):
    # given: events published while the endpoint was off, one dead letter
    since = timezone.now() - timedelta(seconds=1)
    endpoint = create_endpoint(api, receiver.url, is_active=False)
    receiver.secrets = (endpoint["secret"],)
    missed = [publish(api)["id"] for _ in range(3)]
    publish(api, consumer="someone-else")
    path = f"/api/v1/endpoints/{endpoint['id']}"
    assert api.patch(path, {"is_active": True}, format="json").status_code == 200
    dead = publish(api)["id"]
    Delivery.objects.filter(event_id=dead).update(
        status=DeliveryStatus.DEAD_LETTER, dead_lettered_at=timezone.now()
    )
    worker_factory()
    # when
    first = api.post(f"{path}/recover", {"since": since.isoformat()}, format="json")
    # then
    assert first.status_code == 202, first.content
    assert first.json() == {"replayed": 1, "created": 3}
    wait_until(all_succeeded(endpoint_id=endpoint["id"]))
    assert receiver.wait_for(4)
    assert {r.header("webhook-id") for r in receiver.received} == {*missed, dead}
    assert all(r.verified for r in receiver.received)
    # when: again
    again = api.post(f"{path}/recover", {"since": since.isoformat()}, format="json")
    # then: nothing new
    assert again.json() == {"replayed": 0, "created": 0}
    assert Delivery.objects.filter(endpoint_id=endpoint["id"]).count() == 4
