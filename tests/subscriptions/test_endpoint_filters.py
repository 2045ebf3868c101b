"""`filter` on endpoints: through the API and Django admin, stored compiled."""

import json

import pytest

from subscriptions.models import Endpoint
from tests.factories import make_endpoint
from tests.subscriptions.test_admin import change_url, endpoint_data, inline_data

pytestmark = pytest.mark.django_db

HOOK = "http://127.0.0.1:9/hook"
GERMAN_ORDERS = {"customer.country": "DE", "total": {"$gte": 100}}


def create(api, **fields):
    return api.post("/api/v1/endpoints", {"url": HOOK, **fields}, format="json")


def stored_path(endpoint_id) -> str | None:
    return Endpoint.objects.values_list("filter_path", flat=True).get(pk=endpoint_id)


def test_endpoint_is_created_with_a_filter_stored_compiled(api):
    # when
    response = create(api, filter=GERMAN_ORDERS)
    # then: the filter as given; the compiled form is stored, never shown
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["filter"] == GERMAN_ORDERS
    assert "filter_path" not in body
    assert api.get(f"/api/v1/endpoints/{body['id']}").json()["filter"] == (
        GERMAN_ORDERS
    )
    assert "filter_path" not in api.get("/api/v1/endpoints").json()["results"][0]
    assert stored_path(body["id"]) is not None
    assert "exists" in stored_path(body["id"])


def test_endpoint_filter_defaults_to_null(api):
    body = create(api).json()
    assert body["filter"] is None
    assert stored_path(body["id"]) is None


def test_patch_and_put_change_the_filter_and_its_compiled_form(api):
    endpoint = create(api, filter=GERMAN_ORDERS).json()
    url = f"/api/v1/endpoints/{endpoint['id']}"
    # when: PATCH another filter
    patched = api.patch(url, {"filter": {"tags": "vip"}}, format="json")
    # then
    assert patched.status_code == 200, patched.content
    assert patched.json()["filter"] == {"tags": "vip"}
    assert '"vip"' in stored_path(endpoint["id"])
    # when: PATCH something else: the filter stays
    api.patch(url, {"description": "x"}, format="json")
    assert api.get(url).json()["filter"] == {"tags": "vip"}
    assert '"vip"' in stored_path(endpoint["id"])
    # when: PUT without it: back to no filter
    put = api.put(url, {"url": HOOK, "filter": None}, format="json")
    assert put.status_code == 200, put.content
    assert put.json()["filter"] is None
    assert stored_path(endpoint["id"]) is None
    # when: an empty filter, which passes everything: no predicate to run
    api.patch(url, {"filter": {}}, format="json")
    assert api.get(url).json()["filter"] == {}
    assert stored_path(endpoint["id"]) is None


@pytest.mark.parametrize(
    ("filter_value", "message"),
    [
        ([], "filter: must be a JSON object of conditions (null: no filter)."),
        ("customer.country=DE", "filter: must be a JSON object"),
        ({"total": {"$gt": True}}, 'filter["total"]["$gt"]: takes a number'),
        ({"$or": [{"a": 1}, {"b": {"$regex": "x"}}]}, '["$or"][1]["b"]["$regex"]'),
        ({"customer": {"country": "DE"}}, '"customer.country"'),
        ({"a": "\x00"}, "NUL"),
        ({"a": "x" * 9000}, "bytes of JSON"),
    ],
)
def test_malformed_filter_is_a_400_naming_its_place(api, filter_value, message):
    # when: on create, and on a change of an existing endpoint
    created = create(api, filter=filter_value)
    endpoint = create(api).json()
    patched = api.patch(
        f"/api/v1/endpoints/{endpoint['id']}", {"filter": filter_value}, format="json"
    )
    # then
    for response in (created, patched):
        assert response.status_code == 400, response.content
        assert list(response.json()) == ["filter"]
        assert any(message in error for error in response.json()["filter"])
    assert Endpoint.objects.count() == 1
    assert stored_path(endpoint["id"]) is None


def test_filter_of_another_tenants_endpoint_is_404(api, other_api):
    theirs = create(other_api, filter=GERMAN_ORDERS).json()
    url = f"/api/v1/endpoints/{theirs['id']}"
    assert api.get(url).status_code == 404
    assert api.patch(url, {"filter": None}, format="json").status_code == 404
    assert stored_path(theirs["id"]) is not None


def test_openapi_schema_documents_the_filter(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    field = schema["components"]["schemas"]["Endpoint"]["properties"]["filter"]
    assert field["type"] == "object"
    assert field["nullable"] is True
    assert "$gte" in field["description"]
    assert (
        "filter_path" not in schema["components"]["schemas"]["Endpoint"]["properties"]
    )


def test_endpoint_admin_saves_a_filter_compiled(admin_client, tenant):
    endpoint = make_endpoint(tenant=tenant)
    page = admin_client.get(change_url(endpoint))
    assert 'name="filter"' in page.content.decode()
    assert 'name="filter_path"' not in page.content.decode()
    # when
    response = admin_client.post(
        change_url(endpoint),
        {**inline_data(page), **endpoint_data(filter=json.dumps(GERMAN_ORDERS))},
    )
    # then
    assert response.status_code == 302, response.context["errors"]
    endpoint.refresh_from_db()
    assert endpoint.filter == GERMAN_ORDERS
    assert stored_path(endpoint.pk) is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"total": {"$gt": true}}', 'filter["total"]["$gt"]: takes a number'),
        ('{"a": NaN}', "valid JSON"),
        ("[1]", "must be a JSON object"),
    ],
)
def test_endpoint_admin_refuses_what_the_api_refuses(
    admin_client, tenant, text, message
):
    endpoint = make_endpoint(tenant=tenant, filter={"a": 1})
    page = admin_client.get(change_url(endpoint))
    # when
    response = admin_client.post(
        change_url(endpoint), {**inline_data(page), **endpoint_data(filter=text)}
    )
    # then: the form again with the message; the endpoint as it was
    assert response.status_code == 200
    assert message in " ".join(response.context["adminform"].form.errors["filter"])
    endpoint.refresh_from_db()
    assert endpoint.filter == {"a": 1}
    assert '$."a"' in stored_path(endpoint.pk)
