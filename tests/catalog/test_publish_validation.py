"""`POST /api/v1/events` checks payloads against their type's schema, if any."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog import validation
from catalog.validation import payload_errors
from deliveries.models import Event
from tests.catalog.conftest import ORDER_EXAMPLE, ORDER_SCHEMA, create_type, patch, post
from tests.factories import make_endpoint

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events"


def publish(api, payload, event_type="order.created"):
    return post(api, EVENTS, {"event_type": event_type, "payload": payload})


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        ({"id": "ord_1"}, ['$: "customer" is a required property']),
        (
            {"id": "ord_1", "customer": {"id": 5}},
            ['$.customer.id: 5 is not of type "string"'],
        ),
        (
            {"id": "o", "customer": {"id": "c"}, "items": [{"sku": "a"}, {"qty": 1}]},
            ['$.items[1]: "sku" is a required property'],
        ),
        (
            {"id": "o", "customer": {"id": "c"}, "total": "1.5"},
            ['$.total: "1.5" does not match "^[0-9]+\\.[0-9]{2}$"'],
        ),
    ],
)
def test_a_payload_breaking_the_schema_is_a_400_naming_the_path(
    api, tenant, payload, errors
):
    # given
    create_type(api, schema=ORDER_SCHEMA)
    make_endpoint(tenant=tenant)
    # when
    response = publish(api, payload)
    # then: the failing places, and nothing stored
    assert response.status_code == 400, response.content
    assert response.json() == {"payload": errors}
    assert not Event.objects.exists()


def test_every_failing_place_is_listed_up_to_a_bound(api):
    properties = {f"p{i}": {"type": "integer"} for i in range(15)}
    create_type(api, "many.fields", schema={"properties": properties})
    response = publish(api, {f"p{i}": "x" for i in range(15)}, "many.fields")
    assert response.status_code == 400
    errors = response.json()["payload"]
    assert len(errors) == 10
    assert all(error.startswith("$.p") for error in errors)


def test_a_payload_following_the_schema_is_accepted(api, tenant):
    create_type(api, schema=ORDER_SCHEMA)
    make_endpoint(tenant=tenant)
    response = publish(api, {**ORDER_EXAMPLE, "items": [{"sku": "a", "qty": 2}]})
    assert response.status_code == 202
    assert response.json()["deliveries"] == 1


def test_types_without_an_entry_or_without_a_schema_publish_as_before(api):
    create_type(api, "no.schema", description="described only")
    create_type(api, "order.created", schema=ORDER_SCHEMA)
    assert publish(api, {"anything": 1}, "no.schema").status_code == 202
    assert publish(api, {"anything": 1}, "not.in.catalog").status_code == 202


def test_deprecated_types_still_publish_and_are_still_checked(api):
    create_type(api, schema=ORDER_SCHEMA, deprecated=True)
    assert publish(api, ORDER_EXAMPLE).status_code == 202
    assert publish(api, {"id": "o"}).status_code == 400


def test_another_tenants_schema_does_not_apply(api, other_api):
    create_type(other_api, schema=ORDER_SCHEMA)
    assert publish(api, {"not": "an order"}).status_code == 202
    assert publish(other_api, {"not": "an order"}).status_code == 400


def test_a_change_applies_to_the_next_publish(api):
    create_type(api, schema=ORDER_SCHEMA)
    assert publish(api, {"id": "o"}).status_code == 400  # compiled and cached
    patch(api, "/api/v1/event-types/order.created", {"schema": {"type": "object"}})
    assert publish(api, {"id": "o"}).status_code == 202
    patch(api, "/api/v1/event-types/order.created", {"schema": ORDER_SCHEMA})
    assert publish(api, {"id": "o"}).status_code == 400
    api.delete("/api/v1/event-types/order.created")
    assert publish(api, {"id": "o"}).status_code == 202


def test_a_tenant_without_a_catalog_publishes_without_reading_it(api, tenant):
    with CaptureQueriesContext(connection) as queries:
        assert publish(api, {"id": "o"}).status_code == 202
    assert not [q for q in queries if "catalog_eventtype" in q["sql"]]


def test_a_cached_schema_is_read_once_per_catalog_version(api, tenant):
    create_type(api, schema=ORDER_SCHEMA)
    publish(api, ORDER_EXAMPLE)
    with CaptureQueriesContext(connection) as queries:
        assert publish(api, ORDER_EXAMPLE).status_code == 202
    assert not [q for q in queries if "catalog_eventtype" in q["sql"]]


def test_the_cache_is_bounded(tenant, monkeypatch):
    # given: room for three (tenant, type) pairs
    monkeypatch.setattr(validation, "_cache", validation._ValidatorCache(3))
    tenant.catalog_version = 1
    # when: five types are looked up
    for index in range(5):
        assert payload_errors(tenant=tenant, event_type=f"t.{index}", payload={}) == []
    # then
    assert len(validation._cache) == 3


def test_a_payload_with_huge_numbers_is_checked_not_crashed(api):
    create_type(api, "big.numbers", schema={"properties": {"n": {"type": "integer"}}})
    response = publish(api, {"n": 10**40}, "big.numbers")
    assert response.status_code == 202
    response = publish(api, {"n": "ten"}, "big.numbers")
    assert response.status_code == 400


def test_a_batch_item_breaking_its_schema_is_a_400_naming_its_index(api, tenant):
    # given: a schema for order.created, and a batch whose third item breaks it
    create_type(api, schema=ORDER_SCHEMA)
    make_endpoint(tenant=tenant)
    items = [
        {"event_type": "order.created", "payload": ORDER_EXAMPLE},
        {"event_type": "other.type", "payload": {"free": "form"}},
        {"event_type": "order.created", "payload": {"id": "ord_1"}},
    ]
    # when
    response = post(api, f"{EVENTS}/batch", {"events": items})
    # then: the item's index and path, and nothing of the batch stored
    assert response.status_code == 400, response.content
    assert response.json() == {
        "events": {"2": {"payload": ['$: "customer" is a required property']}}
    }
    assert not Event.objects.exists()


@pytest.mark.parametrize("key_in", ["body", "header"])
def test_a_repeat_of_an_accepted_event_answers_as_before_after_its_schema_tightened(
    api, tenant, key_in
):
    # given: an event accepted under a key, then a schema that its payload breaks
    make_endpoint(tenant=tenant)
    body = {"event_type": "order.created", "payload": {"id": "ord_1"}}
    headers = {}
    if key_in == "body":
        body["event_id"] = "k1"
    else:
        headers["HTTP_IDEMPOTENCY_KEY"] = "k1"
    first = post(api, EVENTS, body, **headers)
    assert first.status_code == 202, first.content
    create_type(api, schema=ORDER_SCHEMA)
    # when: the producer retries (a lost answer)
    again = post(api, EVENTS, body, **headers)
    # then: the original event, nothing new; another body is still a conflict,
    # and a new key meets the schema
    assert again.status_code == 200, again.content
    assert again.json()["id"] == first.json()["id"]
    other = {**body, "payload": {"id": "ord_2"}}
    assert post(api, EVENTS, other, **headers).status_code == 409
    fresh = post(api, EVENTS, {**body, "event_id": "k2"})
    assert fresh.status_code == 400
    assert Event.objects.count() == 1
