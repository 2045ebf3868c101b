"""The endpoints API: create, read, update, delete, secrets and URL policy."""

import base64

import pytest

from subscriptions.matching import patterns_matching

pytestmark = pytest.mark.django_db

HOOK = "http://127.0.0.1:9/hook"


def create(api, **fields):
    return api.post("/api/v1/endpoints", {"url": HOOK, **fields}, format="json")


def test_endpoint_create_generates_secret(api):
    response = create(api, event_types=["order.*"], description="orders")
    assert response.status_code == 201
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert 24 <= len(base64.b64decode(body["secret"][6:])) <= 64
    assert body["event_types"] == ["order.*"]
    assert body["is_active"] is True


def test_endpoint_create_with_given_secret(api):
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = create(api, secret=secret).json()
    assert body["secret"] == secret
    assert api.get(f"/api/v1/endpoints/{body['id']}/secret").json() == {
        "secret": secret
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"url": "ftp://example.com/x"},
        {"url": "http://"},
        {"url": "https://example.com/" + "a" * 2048},
        {"url": "http://user:pw@example.com/"},
        {"event_types": ["bad type"]},
        {"event_types": "order.created"},
        {"headers": {"webhook-id": "x"}},
        {"headers": {"X-Ok": "a\r\nInjected: 1"}},
        {"headers": {"X-Ok\n": "a"}},
        {"headers": ["x"]},
        {"secret": "not-a-secret"},
        {"secret": "whsec_" + base64.b64encode(b"short").decode()},
        {"rate_limit": 0},
        {"max_in_flight": 0},
        {"max_in_flight": 1001},
        {"max_in_flight": "many"},
    ],
)
def test_endpoint_create_rejects_invalid_input(api, fields):
    response = create(api, **fields)
    assert response.status_code == 400, response.content
    assert set(fields) & set(response.json())


def test_endpoint_max_in_flight_is_its_own_or_the_servers_default(api):
    endpoint = create(api).json()
    assert endpoint["max_in_flight"] is None  # the server's default
    path = f"/api/v1/endpoints/{endpoint['id']}"
    patched = api.patch(path, {"max_in_flight": 200}, format="json")
    assert patched.status_code == 200
    assert api.get(path).json()["max_in_flight"] == 200
    assert create(api, max_in_flight=1).json()["max_in_flight"] == 1
    cleared = api.patch(path, {"max_in_flight": None}, format="json")
    assert cleared.json()["max_in_flight"] is None


def test_endpoint_url_resolving_to_loopback_refused_unless_allowed(api, settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    for url in ("http://127.0.0.1:9000/", "http://localhost:9000/", "http://[::1]/"):
        response = create(api, url=url)
        assert response.status_code == 400
        assert "outbound address policy" in response.json()["url"][0]
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    # localhost is 127.0.0.1 and ::1: both must be allowed
    assert create(api, url="http://localhost:9000/").status_code == 400
    assert create(api, url="http://127.0.0.1:9000/").status_code == 201
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
    assert create(api, url="http://localhost:9000/").status_code == 201


def test_endpoint_list_get_patch_delete(api):
    endpoint = create(api).json()
    path = f"/api/v1/endpoints/{endpoint['id']}"
    listed = api.get("/api/v1/endpoints").json()
    assert {"next", "previous", "results"} <= set(listed)
    assert [item["id"] for item in listed["results"]] == [endpoint["id"]]
    assert "secret" not in listed["results"][0]
    patched = api.patch(
        path, {"event_types": ["a.b"], "is_active": False}, format="json"
    )
    assert patched.status_code == 200
    assert patched.json()["event_types"] == ["a.b"]
    assert patched.json()["is_active"] is False
    assert patched.json()["disabled_reason"]
    assert (
        api.patch(path, {"is_active": True}, format="json").json()["disabled_reason"]
        == ""
    )
    assert api.delete(path).status_code == 204
    assert api.get(path).status_code == 404


def test_endpoint_paths_work_with_trailing_slash_without_redirect(api):
    endpoint = create(api).json()
    assert api.get("/api/v1/endpoints/").status_code == 200
    assert api.get(f"/api/v1/endpoints/{endpoint['id']}/").status_code == 200
    assert api.get(f"/api/v1/endpoints/{endpoint['id']}/secret/").status_code == 200


def test_endpoint_secret_rotation_keeps_old_secret_signing(api):
    endpoint = create(api).json()
    old = endpoint["secret"]
    rotated = api.post(f"/api/v1/endpoints/{endpoint['id']}/secret/rotate")
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != old
    assert api.get(f"/api/v1/endpoints/{endpoint['id']}/secret").json()["secret"] == new
    from subscriptions.models import Endpoint

    assert Endpoint.objects.get(pk=endpoint["id"]).active_secrets() == [new, old]


def test_endpoint_secret_rotation_grace_zero_drops_old(api, settings):
    settings.WEBHOOK_SECRET_ROTATION_GRACE = 0
    endpoint = create(api).json()
    new = api.post(f"/api/v1/endpoints/{endpoint['id']}/secret/rotate").json()["secret"]
    from subscriptions.models import Endpoint

    assert Endpoint.objects.get(pk=endpoint["id"]).active_secrets() == [new]


def matches(filters: list[str], event_type: str) -> bool:
    """What the fan-out's `&&` on the filters decides (empty = every type)."""
    return not filters or bool(set(filters) & set(patterns_matching(event_type)))


def test_event_type_patterns():
    assert matches([], "order.created")
    assert matches(["*"], "order.created")
    assert matches(["order.*"], "order.created.v2")
    assert matches(["order.created"], "order.created")
    assert not matches(["order.*"], "order")
    assert not matches(["order.*"], "orders.created")
    assert not matches(["order.created"], "order.created.v2")
    assert set(patterns_matching("a.b.c")) == {"a.b.c", "*", "a.*", "a.b.*"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/endpoints/not-a-uuid",
        "/api/v1/endpoints/%C2%84/secret",
        "/api/v1/deliveries/1234/attempts",
        "/api/v1/no-such-collection",
    ],
)
def test_endpoint_malformed_id_answers_json_404(api, path):
    # Regression: URLs no route matches answered Django's HTML 404 page.
    response = api.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_endpoint_description_with_lone_surrogate_is_400_not_500(api):
    # Regression: "\ud800" parsed, then could not be encoded for PostgreSQL (500).
    raw = '{"url": "' + HOOK + '", "description": "x\\ud800"}'
    response = api.post("/api/v1/endpoints", raw, content_type="application/json")
    assert response.status_code == 400
    assert "surrogate" in response.json()["detail"]
