"""Fixtures of the catalog tests: a schema as producers write them."""

import json

import pytest

from catalog.validation import cache_clear

ORDER_SCHEMA = {
    "type": "object",
    "required": ["id", "customer"],
    "properties": {
        "id": {"type": "string"},
        "total": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{2}$"},
        "customer": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string"}, "email": {"type": "string"}},
        },
        "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
    },
    "$defs": {
        "item": {
            "type": "object",
            "required": ["sku"],
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
        }
    },
}
ORDER_EXAMPLE = {"id": "ord_1", "total": "39.80", "customer": {"id": "cus_1"}}


@pytest.fixture(autouse=True)
def _no_compiled_schemas():
    """Each test compiles what it needs: nothing cached by an earlier one."""
    cache_clear()
    yield
    cache_clear()


def post(api, path: str, body, **headers):
    """POST `body` as JSON."""
    return api.post(path, json.dumps(body), content_type="application/json", **headers)


def patch(api, path: str, body):
    """PATCH `body` as JSON."""
    return api.patch(path, json.dumps(body), content_type="application/json")


def create_type(api, name: str = "order.created", **fields):
    """Create an event type through the API; its answer."""
    response = post(api, "/api/v1/event-types", {"name": name, **fields})
    assert response.status_code == 201, response.content
    return response.json()
