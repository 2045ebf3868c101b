"""`/api/v1/event-types`: the catalog's CRUD, its validation, its bounds."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from rest_framework.test import APIClient

from catalog import services
from catalog.models import EventType
from catalog.schemas import MAX_PATTERN_LENGTH, SchemaInvalid, compile_schema
from deliveries.receiver import WebhookReceiver
from tenants.models import Tenant
from tests.catalog.conftest import (
    ORDER_EXAMPLE,
    ORDER_SCHEMA,
    create_type,
    patch,
    post,
)

pytestmark = pytest.mark.django_db

TYPES = "/api/v1/event-types"
FIELDS = {
    "name",
    "description",
    "schema",
    "example",
    "deprecated",
    "created_at",
    "updated_at",
}


def test_create_then_read_by_a_dotted_name_with_and_without_slash(api):
    # when
    created = create_type(
        api,
        "order.created.v2",
        description="An order was placed.",
        schema=ORDER_SCHEMA,
        example=ORDER_EXAMPLE,
    )
    # then
    assert set(created) == FIELDS
    assert created["schema"] == ORDER_SCHEMA
    assert created["example"] == ORDER_EXAMPLE
    assert created["deprecated"] is False
    for path in (f"{TYPES}/order.created.v2", f"{TYPES}/order.created.v2/"):
        response = api.get(path)
        assert response.status_code == 200, path  # no redirect
        assert response.json() == created


def test_list_is_paginated_by_name_with_schemas_and_examples(api):
    create_type(api, "b.second")
    create_type(api, "a.first", schema=ORDER_SCHEMA, example=ORDER_EXAMPLE)
    response = api.get(f"{TYPES}?limit=1")
    body = response.json()
    assert response.status_code == 200
    assert body["count"] == 2 and body["next"] and body["previous"] is None
    [first] = body["results"]
    assert first["name"] == "a.first"
    assert first["schema"] == ORDER_SCHEMA and first["example"] == ORDER_EXAMPLE
    assert api.get(f"{TYPES}/").json()["count"] == 2


def test_duplicate_name_is_a_400(api):
    create_type(api)
    response = post(api, TYPES, {"name": "order.created"})
    assert response.status_code == 400
    assert "already exists" in response.json()["name"][0]


@pytest.mark.django_db(transaction=True)
def test_concurrent_creations_of_one_name_make_one_type_and_400s(issued_key):
    # given: eight clients creating the same name at once
    start = threading.Barrier(8)

    def create(_):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued_key.key}")
        start.wait()
        try:
            return post(client, TYPES, {"name": "order.raced"}).status_code
        finally:
            connection.close()  # this thread's own

    # when
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(create, range(8)))
    # then
    assert statuses == [201] + [400] * 7
    assert EventType.objects.filter(name="order.raced").count() == 1


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("platform.endpoint.disabled", "platform"),
        ("Platform.Mine", "platform"),
        ("order created", "Use 1-255 characters"),
        ("", "may not be blank"),
        ("x" * 256, "no more than 255"),
        (42, "Not a valid string"),
    ],
)
def test_bad_or_reserved_names_are_400s(api, name, message):
    response = post(api, TYPES, {"name": name})
    assert response.status_code == 400
    assert message in response.json()["name"][0]
    assert not EventType.objects.exists()


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "objekt"}, "#/type: 'objekt' is not valid"),
        ({"properties": {"id": {"minLength": -1}}}, "#/properties/id/minLength: -1"),
        ([], "Must be a JSON Schema object"),
        (True, "Must be a JSON Schema object"),
        ("{}", "Must be a JSON Schema object"),
        ({"$schema": "http://json-schema.org/draft-07/schema#"}, "2020-12"),
        ({"$ref": "#/$defs/missing"}, "missing"),
        ({"properties": {"a": {"pattern": "(?=a)b"}}}, "without look-around"),
        ({"pattern": "(a"}, "#/pattern"),
        ({"pattern": "a" * (MAX_PATTERN_LENGTH + 1)}, "limited to 1000"),
        ({"description": "x" * 70_000}, "Larger than 64 KiB"),
    ],
)
def test_invalid_schemas_are_400s_naming_the_problem(api, schema, message):
    response = post(api, TYPES, {"name": "order.created", "schema": schema})
    assert response.status_code == 400, response.content
    [error] = response.json()["schema"]
    assert message in error
    assert not EventType.objects.exists()


def test_a_schema_nested_too_deep_is_a_400(api):
    schema = {"type": "object"}
    for _ in range(40):
        schema = {"type": "object", "properties": {"a": schema}}
    response = post(api, TYPES, {"name": "deep.one", "schema": schema})
    assert response.status_code == 400
    assert "Nested more than 64 levels" in response.json()["schema"][0]


@pytest.mark.parametrize(
    ("example", "message"),
    [
        ({"id": "ord_1"}, '$: "customer" is a required property'),
        (
            {"id": "ord_1", "customer": {"id": 7}},
            '$.customer.id: 7 is not of type "string"',
        ),
        ([1, 2], "Must be a JSON object"),
        ({"big": "x" * 70_000}, "Larger than 64 KiB"),
    ],
)
def test_an_example_that_breaks_the_schema_is_a_400(api, example, message):
    response = post(
        api,
        TYPES,
        {"name": "order.created", "schema": ORDER_SCHEMA, "example": example},
    )
    assert response.status_code == 400
    assert any(message in error for error in response.json()["example"])


def test_types_per_tenant_are_bounded(api, monkeypatch):
    monkeypatch.setattr(services, "MAX_EVENT_TYPES_PER_TENANT", 2)
    create_type(api, "a.one")
    create_type(api, "a.two")
    response = post(api, TYPES, {"name": "a.three"})
    assert response.status_code == 400
    assert "at most 2 event types" in response.json()["non_field_errors"][0]


def test_patch_changes_fields_but_never_the_name(api):
    create_type(api, schema=ORDER_SCHEMA, example=ORDER_EXAMPLE)
    path = f"{TYPES}/order.created"
    # a new name: refused
    response = patch(api, path, {"name": "order.placed"})
    assert response.status_code == 400
    assert "never changes" in response.json()["name"][0]
    # the same name, with other fields: accepted
    response = patch(
        api, path, {"name": "order.created", "deprecated": True, "description": "Old"}
    )
    assert response.status_code == 200
    assert response.json()["deprecated"] is True
    assert response.json()["description"] == "Old"
    # a schema the stored example breaks: refused, nothing changed
    stricter = {**ORDER_SCHEMA, "required": ["id", "customer", "items"]}
    response = patch(api, path, {"schema": stricter})
    assert response.status_code == 400
    assert '"items" is a required property' in response.json()["example"][0]
    assert EventType.objects.get().schema == ORDER_SCHEMA
    # removing the schema: any payload
    assert patch(api, path, {"schema": None}).json()["schema"] is None
    assert patch(api, path, {"deprecated": "yes"}).status_code == 400


def test_delete_then_404(api):
    create_type(api)
    assert api.delete(f"{TYPES}/order.created").status_code == 204
    assert api.get(f"{TYPES}/order.created").status_code == 404
    assert api.delete(f"{TYPES}/order.created").status_code == 404


def test_another_tenants_types_answer_404_and_stay_unchanged(api, other_api):
    create_type(other_api, "their.type", description="theirs")
    path = f"{TYPES}/their.type"
    for response in (
        api.get(path),
        patch(api, path, {"description": "hacked"}),
        api.delete(path),
        api.get(f"{TYPES}/never.was"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}
    assert api.get(TYPES).json()["count"] == 0
    assert EventType.objects.get(name="their.type").description == "theirs"


def test_each_write_bumps_the_tenant_catalog_version(api, tenant):
    def version() -> int:
        return Tenant.objects.get(pk=tenant.pk).catalog_version

    assert version() == 0
    create_type(api)
    assert version() == 1
    patch(api, f"{TYPES}/order.created", {"description": "x"})
    assert version() == 2
    api.delete(f"{TYPES}/order.created")
    assert version() == 3
    post(api, TYPES, {"name": "bad name"})  # refused: no change
    assert version() == 3


def test_the_tenant_row_comes_with_the_catalog_version_on_each_request(issued_key):
    from tenants.selectors import api_key_authenticate

    Tenant.objects.filter(pk=issued_key.api_key.tenant_id).update(catalog_version=7)
    authenticated = api_key_authenticate(key=issued_key.key)
    assert authenticated.tenant.catalog_version == 7


def test_a_ref_to_a_url_is_never_fetched(api):
    with WebhookReceiver() as receiver:
        remote = f"{receiver.url}/schema.json"
        schemas = [
            {"$ref": remote},
            {"properties": {"a": {"$ref": remote}}},
            {"$id": f"{receiver.url}/root.json", "$ref": "other.json"},
            {"$defs": {"a": {"$dynamicRef": remote}}},
        ]
        for schema in schemas:
            response = post(api, TYPES, {"name": "order.remote", "schema": schema})
            assert response.status_code == 400, schema
            assert "never fetched" in response.json()["schema"][0]
        # the validator itself, past the API's check, refuses to retrieve
        with pytest.raises(SchemaInvalid, match="never fetched"):
            compile_schema({"$ref": remote})
        time.sleep(0.5)
        assert receiver.connections_opened == 0
        assert receiver.received == []
    assert not EventType.objects.exists()


def test_a_backtracking_pattern_cannot_stall_a_publish(api):
    # given: the classic catastrophic pattern for a backtracking engine
    create_type(
        api,
        "redos.attempt",
        schema={"properties": {"s": {"pattern": "^(a+)+$"}}},
    )
    payload = {"s": "a" * 100_000 + "!"}
    # when
    started = time.monotonic()
    response = post(
        api, "/api/v1/events", {"event_type": "redos.attempt", "payload": payload}
    )
    # then: refused at once (a backtracking engine would run for ages)
    assert response.status_code == 400
    assert response.json()["payload"][0].startswith("$.s: ")
    assert time.monotonic() - started < 2


def test_schema_and_example_fields_keep_json_types(api):
    # a JSON string that holds an object is not an object
    response = post(api, TYPES, {"name": "a.b", "example": json.dumps(ORDER_EXAMPLE)})
    assert response.status_code == 400
    assert "Must be a JSON object" in response.json()["example"][0]
