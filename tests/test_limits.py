"""Every size limit of the API answers a clear 4xx, never a 500 or a silent cut.

Inbound request headers are bounded before Django by gunicorn's defaults
(request line 4094 bytes, 100 header fields of at most 8190 bytes each: 400);
what the API stores and sends on is bounded here.
"""

import json

import pytest
from django.conf import settings as django_settings

from deliveries import validation
from subscriptions.api.serializers import (
    MAX_EVENT_TYPES,
    MAX_HEADERS,
    EndpointSerializer,
)
from tenants import services as tenant_services
from tests.factories import make_endpoint, make_event

pytestmark = pytest.mark.django_db

HOOK = "http://127.0.0.1:9/hook"


def publish(api, body, **headers):
    return api.post(
        "/api/v1/events", json.dumps(body), content_type="application/json", **headers
    )


def nested(depth: int) -> dict:
    """An object `depth` levels deep: {"a": {"a": ... {"a": 1}}}."""
    value = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def test_limits_defaults():
    assert django_settings.WEBHOOK_MAX_PAYLOAD_BYTES == 256 * 1024
    assert validation.MAX_PAYLOAD_DEPTH == 32
    assert django_settings.WEBHOOK_MAX_ENDPOINTS_PER_TENANT == 1000


def test_request_body_over_limit_is_413_on_every_json_endpoint(api, settings):
    settings.WEBHOOK_MAX_PAYLOAD_BYTES = 1024
    big = "x" * 2000
    responses = [
        publish(api, {"event_type": "big", "payload": {"blob": big}}),
        api.post("/api/v1/endpoints", {"url": HOOK, "description": big}, "json"),
        api.post("/api/v1/api-keys", {"name": big}, "json"),
    ]
    for response in responses:
        assert response.status_code == 413
        assert "1024 bytes" in response.json()["detail"]


@pytest.mark.parametrize("size", [256 * 1024 + 1, 3 * 1024 * 1024, 40 * 1024 * 1024])
def test_every_oversized_api_body_is_413_whatever_its_size(api, tenant, size):
    # Django's own upload limit (2.5 MB) answered a bare 400 before the parser ran
    body = json.dumps({"event_type": "big", "payload": {"blob": "x" * size}})
    endpoint = make_endpoint(tenant=tenant)
    paths = [
        ("post", "/api/v1/events"),
        ("post", "/api/v1/endpoints"),
        ("patch", f"/api/v1/endpoints/{endpoint.pk}"),
        ("put", f"/api/v1/endpoints/{endpoint.pk}"),
        ("post", f"/api/v1/endpoints/{endpoint.pk}/secret/rotate"),
        ("post", "/api/v1/api-keys"),
        ("post", "/api/v1/dead-letters/replay"),
    ]
    for method, path in paths:
        response = getattr(api, method)(path, body, content_type="application/json")
        assert response.status_code == 413, (path, response.content[:200])
        assert response.json() == {"detail": "Request body exceeds 262144 bytes."}
    assert not tenant.events.exists()


def test_oversized_admin_body_is_413(admin_client):
    limit = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = admin_client.post(
        "/admin/tenants/tenant/add/", {"name": "x" * (limit + 1)}
    )
    assert response.status_code == 413
    assert f"exceeds {limit} bytes" in response.content.decode()


def test_endpoints_per_host_are_capped_on_create_patch_and_put(api, settings):
    # given: two endpoints per host at most
    settings.WEBHOOK_MAX_ENDPOINTS_PER_HOST = 2
    urls = ["http://127.0.0.1:9001/a", "http://127.0.0.1:9002/b"]
    for url in urls:
        assert api.post("/api/v1/endpoints", {"url": url}, "json").status_code == 201
    # when / then: a third at that host (another port, path or case) is refused
    third = api.post("/api/v1/endpoints", {"url": "http://127.0.0.1:9003/c"}, "json")
    assert third.status_code == 400
    assert third.json() == {
        "url": ["A tenant can have at most 2 endpoints at one host (127.0.0.1)."]
    }
    # another host is fine, and cannot be moved to the full one
    other = api.post("/api/v1/endpoints", {"url": "http://127.0.0.2:9001/"}, "json")
    assert other.status_code == 201
    path = f"/api/v1/endpoints/{other.json()['id']}"
    moved = api.patch(path, {"url": "http://127.0.0.1:9009/"}, "json")
    assert moved.status_code == 400
    assert "at one host (127.0.0.1)" in moved.json()["url"][0]
    put = api.put(path, {"url": "http://127.0.0.1:9009/"}, "json")
    assert put.status_code == 400
    # an endpoint keeps its own URL, or moves along its host
    first = api.get("/api/v1/endpoints").json()["results"][-1]
    renamed = api.patch(
        f"/api/v1/endpoints/{first['id']}", {"url": "http://127.0.0.1:9001/z"}, "json"
    )
    assert renamed.status_code == 200, renamed.content


def test_api_keys_per_tenant_are_capped(api, monkeypatch):
    monkeypatch.setattr(tenant_services, "MAX_API_KEYS_PER_TENANT", 3)  # fixture's: 1
    for _ in range(2):
        assert api.post("/api/v1/api-keys", {"name": "k"}, "json").status_code == 201
    refused = api.post("/api/v1/api-keys", {"name": "k"}, "json")
    assert refused.status_code == 400
    assert refused.json() == {
        "non_field_errors": [
            "A tenant can have at most 3 active API keys; revoke one first."
        ]
    }
    # revoking one makes room
    spare = api.get("/api/v1/api-keys").json()["results"][0]["id"]
    assert api.delete(f"/api/v1/api-keys/{spare}").status_code == 204
    assert api.post("/api/v1/api-keys", {"name": "k"}, "json").status_code == 201


def test_payload_depth_at_limit_is_accepted(api):
    response = publish(api, {"event_type": "deep", "payload": nested(32)})
    assert response.status_code == 202, response.content


def test_payload_depth_over_limit_is_400_with_clear_message(api, tenant):
    # given: one level too many, inside an array for good measure
    payload = {"items": [nested(31)]}
    # when
    response = publish(api, {"event_type": "deep", "payload": payload})
    # then
    assert response.status_code == 400
    assert response.json() == {"payload": ["Nested more than 32 levels deep."]}
    assert not tenant.events.exists()


def test_payload_depth_limit_follows_setting(monkeypatch, api, settings):
    monkeypatch.setattr(validation, "MAX_PAYLOAD_DEPTH", 3)
    assert publish(api, {"event_type": "d", "payload": nested(3)}).status_code == 202
    response = publish(api, {"event_type": "d", "payload": nested(4)})
    assert response.status_code == 400
    assert "3 levels" in response.json()["payload"][0]


def test_endpoint_header_value_over_4096_characters_is_400():
    at_limit = EndpointSerializer(data={"url": HOOK, "headers": {"X-A": "v" * 4096}})
    over = EndpointSerializer(data={"url": HOOK, "headers": {"X-A": "v" * 4097}})
    assert at_limit.is_valid(), at_limit.errors
    assert not over.is_valid()
    assert "headers" in over.errors


def test_endpoint_more_than_50_headers_is_400(api):
    headers = {f"X-H{index}": "v" for index in range(MAX_HEADERS + 1)}
    too_many = api.post("/api/v1/endpoints", {"url": HOOK, "headers": headers}, "json")
    assert too_many.status_code == 400
    assert too_many.json() == {"headers": [f"At most {MAX_HEADERS} headers."]}
    del headers[f"X-H{MAX_HEADERS}"]
    at_limit = api.post("/api/v1/endpoints", {"url": HOOK, "headers": headers}, "json")
    assert at_limit.status_code == 201, at_limit.content


def test_endpoint_header_name_over_256_characters_is_400():
    serializer = EndpointSerializer(data={"url": HOOK, "headers": {"X" * 257: "v"}})
    assert not serializer.is_valid()
    assert "not a valid header name" in str(serializer.errors["headers"])


def test_endpoints_per_tenant_over_limit_is_400(api, tenant, settings):
    # given
    settings.WEBHOOK_MAX_ENDPOINTS_PER_TENANT = 3
    created = [
        api.post("/api/v1/endpoints", {"url": HOOK}, "json").json()["id"]
        for _ in range(3)
    ]
    # when
    refused = api.post("/api/v1/endpoints", {"url": HOOK}, "json")
    # then
    assert refused.status_code == 400
    assert refused.json() == {
        "non_field_errors": ["A tenant can have at most 3 endpoints; delete one first."]
    }
    assert tenant.endpoints.count() == 3
    assert api.delete(f"/api/v1/endpoints/{created[0]}").status_code == 204
    assert api.post("/api/v1/endpoints", {"url": HOOK}, "json").status_code == 201


def test_endpoints_limit_is_per_tenant(api, other_api, settings):
    settings.WEBHOOK_MAX_ENDPOINTS_PER_TENANT = 1
    make_endpoint(tenant=other_api.tenant)
    assert api.post("/api/v1/endpoints", {"url": HOOK}, "json").status_code == 201


def test_endpoint_event_types_over_256_is_400(api):
    types = [f"type.{index}" for index in range(MAX_EVENT_TYPES + 1)]
    too_many = api.post(
        "/api/v1/endpoints", {"url": HOOK, "event_types": types}, "json"
    )
    assert too_many.status_code == 400
    assert "event_types" in too_many.json()
    at_limit = api.post(
        "/api/v1/endpoints", {"url": HOOK, "event_types": types[:-1]}, "json"
    )
    assert at_limit.status_code == 201, at_limit.content
    assert len(at_limit.json()["event_types"]) == MAX_EVENT_TYPES


def test_idempotency_key_over_255_characters_is_400(api):
    response = publish(
        api, {"event_type": "t", "payload": {}}, HTTP_IDEMPOTENCY_KEY="k" * 256
    )
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()


def make_many(tenant, count: int) -> None:
    """`count` events, then `count` endpoints (so the events fan out to none)."""
    for index in range(count):
        make_event(tenant=tenant, payload={"n": index})
    for _ in range(count):
        make_endpoint(tenant=tenant)


def test_page_size_is_capped_at_200(api, tenant):
    # given: more than the largest page of both kinds of list
    make_many(tenant, 205)
    # when
    endpoints = api.get("/api/v1/endpoints?limit=100000").json()
    events = api.get("/api/v1/events?limit=100000").json()
    # then
    assert endpoints["count"] == 205
    assert len(endpoints["results"]) == 200
    assert len(events["results"]) == 200
    assert endpoints["next"]
    assert events["next"]


def test_invalid_page_size_falls_back_to_default(api, tenant):
    make_many(tenant, 60)
    for limit in ("-1", "0", "abc", "1e3", ""):
        for path in ("/api/v1/endpoints", "/api/v1/events"):
            response = api.get(f"{path}?limit={limit}")
            assert response.status_code == 200, (path, limit, response.content)
            assert len(response.json()["results"]) == 50
