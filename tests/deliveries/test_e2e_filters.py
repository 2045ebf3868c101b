"""End to end with a real worker and receiver: payload filters decide who receives."""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.models import Delivery
from tests.conftest import wait_until
from tests.deliveries.test_e2e_endpoint_tools import (
    all_succeeded,
    create_endpoint,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def publish(api, payload, event_type="order.created"):
    body = {"event_type": event_type, "payload": payload}
    response = api.post(
        "/api/v1/events", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 202, response.content
    return response.json()


def test_e2e_events_reach_only_the_endpoints_whose_filter_matches(
    api, receiver, worker_factory
):
    # given: an endpoint for German orders, one for large ones, one for all
    worker_factory()
    german = create_endpoint(
        api, receiver.url + "de", filter={"customer.country": "DE"}
    )
    large = create_endpoint(
        api,
        receiver.url + "large",
        filter={"$or": [{"total": {"$gte": 1000}}, {"tags": "vip"}]},
    )
    everything = create_endpoint(api, receiver.url + "all")
    receiver.secrets = (german["secret"], large["secret"], everything["secret"])
    # when
    small_de = publish(api, {"customer": {"country": "DE"}, "total": 10})
    large_fr = publish(api, {"customer": {"country": "FR"}, "total": 5000})
    vip_us = publish(api, {"customer": {"country": "US"}, "tags": ["vip"]})
    # then: the answers count the filtered fan-out ...
    assert [small_de["deliveries"], large_fr["deliveries"], vip_us["deliveries"]] == [
        2,
        2,
        2,
    ]
    for event in (small_de, large_fr, vip_us):
        wait_until(all_succeeded(event_id=event["id"]))
    assert receiver.wait_for(6)
    # ... and the receiver got exactly those, signed
    paths = {}
    for request in receiver.received:
        assert request.verified is True
        paths.setdefault(request.header("webhook-id"), set()).add(request.path)
    assert paths == {
        small_de["id"]: {"/de", "/all"},
        large_fr["id"]: {"/large", "/all"},
        vip_us["id"]: {"/large", "/all"},
    }
    body = json.loads(next(r.body for r in receiver.received if r.path == "/de"))
    assert body["data"] == {"customer": {"country": "DE"}, "total": 10}


def test_e2e_recover_gives_a_filtered_endpoint_only_what_it_matches(
    api, receiver, worker_factory
):
    # given: events published before a filtered endpoint existed
    since = timezone.now() - timedelta(seconds=1)
    wanted = publish(api, {"total": 5000})
    publish(api, {"total": 1})
    publish(api, {})
    endpoint = create_endpoint(api, receiver.url, filter={"total": {"$gte": 1000}})
    receiver.secrets = (endpoint["secret"],)
    worker_factory()
    # when
    path = f"/api/v1/endpoints/{endpoint['id']}/recover"
    response = api.post(path, {"since": since.isoformat()}, format="json")
    # then
    assert response.status_code == 202, response.content
    assert response.json() == {"replayed": 0, "created": 1}
    wait_until(all_succeeded(endpoint_id=endpoint["id"]))
    assert receiver.wait_for(1)
    time.sleep(0.5)  # nothing else arrives
    assert [r.header("webhook-id") for r in receiver.received] == [wanted["id"]]
    assert Delivery.objects.filter(endpoint_id=endpoint["id"]).count() == 1
