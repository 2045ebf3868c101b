"""Consumers: validation, the fan-out of an event with a consumer, the filters."""

import json

import pytest

from deliveries.models import Delivery
from tests.factories import make_endpoint

pytestmark = pytest.mark.django_db

HOOK = "http://127.0.0.1:9/hook"
BAD_CONSUMERS = [
    "",
    "a b",
    "acme/eu",
    "ünïcode",
    "a\x00b",
    "x" * 129,
    12,
    1.5,
    True,
    ["acme"],
    {"id": "acme"},
]


def create(api, **fields):
    return api.post("/api/v1/endpoints", {"url": HOOK, **fields}, format="json")


def publish(api, event_type="order.created", headers=None, **fields):
    body = {"event_type": event_type, "payload": {"n": 1}, **fields}
    return api.post(
        "/api/v1/events",
        json.dumps(body),
        content_type="application/json",
        **(headers or {}),
    )


@pytest.mark.parametrize(
    "consumer", ["a", "acme", "Acme_01.eu:prod-2", "x" * 128, None]
)
def test_endpoint_consumer_accepts_valid_ids_and_null(api, consumer):
    response = create(api, consumer=consumer)
    assert response.status_code == 201, response.content
    assert response.json()["consumer"] == consumer
    shown = api.get(f"/api/v1/endpoints/{response.json()['id']}").json()
    assert shown["consumer"] == consumer


def test_endpoint_consumer_defaults_to_null(api):
    assert create(api).json()["consumer"] is None


@pytest.mark.parametrize("consumer", BAD_CONSUMERS)
def test_endpoint_create_rejects_a_bad_consumer_naming_the_field(api, consumer):
    response = create(api, consumer=consumer)
    assert response.status_code == 400, response.content
    assert "consumer" in response.json()


@pytest.mark.parametrize("consumer", BAD_CONSUMERS)
def test_endpoint_patch_and_put_reject_a_bad_consumer(api, consumer):
    # given
    endpoint = create(api, consumer="acme").json()
    path = f"/api/v1/endpoints/{endpoint['id']}"
    # when
    patched = api.patch(path, {"consumer": consumer}, format="json")
    put = api.put(path, {"url": HOOK, "consumer": consumer}, format="json")
    # then
    for response in (patched, put):
        assert response.status_code == 400, response.content
        assert "consumer" in response.json()
    assert api.get(path).json()["consumer"] == "acme"


def test_endpoint_patch_and_put_change_the_consumer(api):
    # given
    endpoint = create(api, consumer="acme").json()
    path = f"/api/v1/endpoints/{endpoint['id']}"
    # when / then
    patched = api.patch(path, {"consumer": "globex"}, format="json")
    assert patched.json()["consumer"] == "globex"
    assert api.patch(path, {"consumer": None}, format="json").json()["consumer"] is None
    put = api.put(path, {"url": HOOK, "consumer": "initech"}, format="json")
    assert put.status_code == 200, put.content
    assert put.json()["consumer"] == "initech"


@pytest.mark.parametrize("consumer", BAD_CONSUMERS)
def test_event_rejects_a_bad_consumer_naming_the_field(api, consumer):
    response = publish(api, consumer=consumer)
    assert response.status_code == 400, response.content
    assert "consumer" in response.json()


def test_event_with_a_consumer_fans_out_to_its_matching_active_endpoints_only(
    api, tenant
):
    # given
    mine = make_endpoint(tenant=tenant, consumer="acme", event_types=["order.*"])
    make_endpoint(tenant=tenant, consumer="acme", event_types=["invoice.*"])
    make_endpoint(tenant=tenant, consumer="acme", is_active=False)
    make_endpoint(tenant=tenant, consumer="globex")
    make_endpoint(tenant=tenant)
    # when
    response = publish(api, consumer="acme")
    # then
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["deliveries"] == 1
    assert body["consumer"] == "acme"
    deliveries = Delivery.objects.filter(event_id=body["id"])
    assert [d.endpoint_id for d in deliveries] == [mine.pk]
    assert api.get(f"/api/v1/events/{body['id']}").json()["consumer"] == "acme"


def test_event_without_a_consumer_reaches_every_matching_endpoint(api, tenant):
    # given
    endpoints = {
        make_endpoint(tenant=tenant, consumer="acme").pk,
        make_endpoint(tenant=tenant, consumer="globex").pk,
        make_endpoint(tenant=tenant).pk,
    }
    make_endpoint(tenant=tenant, consumer="acme", event_types=["invoice.*"])
    # when
    body = publish(api).json()
    # then
    assert body["deliveries"] == 3
    assert body["consumer"] is None
    reached = set(
        Delivery.objects.filter(event_id=body["id"]).values_list(
            "endpoint_id", flat=True
        )
    )
    assert reached == endpoints


def test_event_for_a_consumer_without_endpoints_has_no_deliveries(api, tenant):
    make_endpoint(tenant=tenant)
    body = publish(api, consumer="nobody").json()
    assert body["deliveries"] == 0
    assert not Delivery.objects.filter(event_id=body["id"]).exists()


def test_event_never_reaches_another_tenants_consumer_of_the_same_name(
    api, other_api, tenant
):
    # given
    make_endpoint(tenant=other_api.tenant, consumer="acme")
    mine = make_endpoint(tenant=tenant, consumer="acme")
    # when
    body = publish(api, consumer="acme").json()
    # then
    assert body["deliveries"] == 1
    assert Delivery.objects.get(event_id=body["id"]).endpoint_id == mine.pk


def test_idempotency_same_key_body_and_consumer_answers_the_original(api, tenant):
    # given
    make_endpoint(tenant=tenant, consumer="acme")
    key = {"HTTP_IDEMPOTENCY_KEY": "k-1"}
    first = publish(api, consumer="acme", headers=key)
    # when
    again = publish(api, consumer="acme", headers=key)
    # then
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Delivery.objects.filter(event_id=first.json()["id"]).count() == 1


@pytest.mark.parametrize(
    ("first", "second"), [("acme", "globex"), ("acme", None), (None, "acme")]
)
def test_idempotency_same_key_another_consumer_is_a_conflict(api, first, second):
    key = {"HTTP_IDEMPOTENCY_KEY": "k-2"}
    assert publish(api, consumer=first, headers=key).status_code == 202
    assert publish(api, consumer=second, headers=key).status_code == 409


def test_endpoints_list_filters_by_consumer(api, other_api, tenant):
    # given
    acme = make_endpoint(tenant=tenant, consumer="acme")
    make_endpoint(tenant=tenant, consumer="globex")
    make_endpoint(tenant=tenant)
    make_endpoint(tenant=other_api.tenant, consumer="acme")
    # when
    listed = api.get("/api/v1/endpoints", {"consumer": "acme"}).json()["results"]
    # then
    assert [e["id"] for e in listed] == [str(acme.pk)]
    assert len(api.get("/api/v1/endpoints").json()["results"]) == 3
    assert api.get("/api/v1/endpoints", {"consumer": "nobody"}).json()["results"] == []


def test_events_and_deliveries_lists_filter_by_consumer(api, other_api, tenant):
    # given
    acme = make_endpoint(tenant=tenant, consumer="acme")
    make_endpoint(tenant=tenant, consumer="globex")
    make_endpoint(tenant=other_api.tenant, consumer="acme")
    for_acme = publish(api, consumer="acme").json()
    for_all = publish(api).json()
    publish(other_api, consumer="acme")
    # when
    events = api.get("/api/v1/events", {"consumer": "acme"}).json()["results"]
    deliveries = api.get("/api/v1/deliveries", {"consumer": "acme"}).json()["results"]
    # then: the events published for acme; the deliveries to acme's endpoints
    assert [e["id"] for e in events] == [for_acme["id"]]
    assert {d["event"] for d in deliveries} == {for_acme["id"], for_all["id"]}
    assert {d["endpoint"] for d in deliveries} == {str(acme.pk)}


@pytest.mark.parametrize("path", ["endpoints", "events", "deliveries"])
def test_consumer_filter_rejects_a_bad_id_naming_it(api, path):
    response = api.get(f"/api/v1/{path}", {"consumer": "a b"})
    assert response.status_code == 400, response.content
    assert "consumer" in response.json()
