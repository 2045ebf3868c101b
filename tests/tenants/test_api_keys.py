"""API keys: authentication, hashing, revocation, management commands."""

from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from tenants import services
from tenants.keys import hash_key
from tenants.models import ApiKey, Tenant

pytestmark = pytest.mark.django_db


def test_api_key_missing_answers_401():
    response = APIClient().get("/api/v1/endpoints")
    assert response.status_code == 401


def test_api_key_wrong_answers_401(issued_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=issued_key.key[:-2] + "xx")
    assert client.get("/api/v1/endpoints").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Bearer " + issued_key.key[:-2] + "xx")
    assert client.get("/api/v1/endpoints").status_code == 401


def test_api_key_accepted_as_bearer_or_x_api_key(issued_key):
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {issued_key.key}")
    header = APIClient()
    header.credentials(HTTP_X_API_KEY=issued_key.key)
    assert bearer.get("/api/v1/endpoints").status_code == 200
    assert header.get("/api/v1/endpoints").status_code == 200


def test_api_key_stored_only_as_hash(issued_key):
    stored = ApiKey.objects.get(pk=issued_key.api_key.pk)
    assert issued_key.key.startswith("whk_")
    assert len(issued_key.key) >= 4 + 43  # 32 random bytes, base64
    assert stored.key_hash == hash_key(issued_key.key)
    assert issued_key.key not in {stored.key_hash, stored.prefix, stored.name}
    assert issued_key.key.startswith(stored.prefix)


def test_api_key_create_shows_key_once_and_it_works(api):
    # when
    created = api.post("/api/v1/api-keys", {"name": "ci"}, format="json")
    # then
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "name", "prefix", "key", "created_at"}
    listed = api.get("/api/v1/api-keys").json()["results"]
    assert all("key" not in item for item in listed)
    assert body["id"] in {item["id"] for item in listed}
    fresh = APIClient()
    fresh.credentials(HTTP_AUTHORIZATION=f"Bearer {body['key']}")
    assert fresh.get("/api/v1/endpoints").status_code == 200


def test_api_key_revoked_fails_on_next_request(api, issued_key):
    created = api.post("/api/v1/api-keys", {"name": "temp"}, format="json").json()
    temp = APIClient()
    temp.credentials(HTTP_AUTHORIZATION=f"Bearer {created['key']}")
    assert temp.get("/api/v1/endpoints").status_code == 200
    # when
    assert api.delete(f"/api/v1/api-keys/{created['id']}").status_code == 204
    # then
    assert temp.get("/api/v1/endpoints").status_code == 401


def test_api_key_last_used_at_written_once_per_interval(
    monkeypatch, api, issued_key, settings
):
    monkeypatch.setattr(services, "KEY_TOUCH_INTERVAL", 3600)
    api.get("/api/v1/endpoints")
    first = ApiKey.objects.get(pk=issued_key.api_key.pk).last_used_at
    api.get("/api/v1/endpoints")
    second = ApiKey.objects.get(pk=issued_key.api_key.pk).last_used_at
    assert first is not None
    assert second == first


def test_create_tenant_command_prints_id_and_working_key():
    out = StringIO()
    call_command("create_tenant", "acme", "--rate-limit", "5", stdout=out)
    lines = dict(line.split(": ", 1) for line in out.getvalue().splitlines())
    tenant = Tenant.objects.get(pk=lines["tenant_id"])
    assert tenant.name == "acme"
    assert tenant.rate_limit == 5
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {lines['api_key']}")
    assert client.get("/api/v1/endpoints").status_code == 200


def test_create_api_key_command_by_name_and_id(tenant):
    for ident in (tenant.name, str(tenant.pk)):
        out = StringIO()
        call_command("create_api_key", ident, stdout=out)
        key = out.getvalue().strip().removeprefix("api_key: ")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        assert client.get("/api/v1/endpoints").status_code == 200
