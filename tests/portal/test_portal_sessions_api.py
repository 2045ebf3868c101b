"""`POST /api/v1/portal-sessions`: single-use links into one consumer's portal."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from portal.models import PortalSession
from portal.services import token_hash

pytestmark = pytest.mark.django_db

URL = "/api/v1/portal-sessions"


def test_portal_session_create_answers_an_absolute_single_use_link(api, tenant):
    # when
    before = timezone.now()
    response = api.post(URL, {"consumer": "cust_42"}, "json")
    # then: 201 with an absolute link, an hour by default
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["url"].startswith("http://testserver/portal/enter/")
    assert body["consumer"] == "cust_42"
    assert body["read_only"] is False
    session = PortalSession.objects.get(pk=body["id"])
    assert session.tenant == tenant
    expires = session.expires_at - before
    assert timedelta(minutes=59) < expires <= timedelta(hours=1, seconds=5)
    assert body["expires_at"].replace("Z", "+00:00") == session.expires_at.isoformat()
    # only the token's hash is stored
    token = body["url"].rsplit("/", 1)[1]
    assert session.token_hash == token_hash(token)
    assert token not in repr(PortalSession.objects.values().get(pk=session.pk))


def test_portal_session_create_takes_ttl_and_read_only(api):
    response = api.post(
        URL, {"consumer": "a.b:c-d_1", "ttl_seconds": 86_400, "read_only": True}, "json"
    )
    assert response.status_code == 201, response.content
    session = PortalSession.objects.get(pk=response.json()["id"])
    assert session.read_only is True
    assert session.expires_at - session.created_at > timedelta(hours=23, minutes=59)


def test_portal_session_create_with_trailing_slash(api):
    assert api.post(URL + "/", {"consumer": "c1"}, "json").status_code == 201


@pytest.mark.parametrize("ttl", [0, -1, 86_401, "soon", 1.5, None])
def test_portal_session_bad_ttl_is_a_400_naming_it(api, ttl):
    response = api.post(URL, {"consumer": "c1", "ttl_seconds": ttl}, "json")
    assert response.status_code == 400
    assert list(response.json()) == ["ttl_seconds"]


@pytest.mark.parametrize("consumer", ["", "a b", "x" * 129, 42, None, "é", ["c1"]])
def test_portal_session_bad_consumer_is_a_400_naming_it(api, consumer):
    response = api.post(URL, {"consumer": consumer}, "json")
    assert response.status_code == 400
    assert list(response.json()) == ["consumer"]


def test_portal_session_missing_consumer_is_a_400_naming_it(api):
    response = api.post(URL, {}, "json")
    assert response.status_code == 400
    assert list(response.json()) == ["consumer"]


def test_portal_session_for_a_consumer_without_endpoints_is_allowed(api):
    assert api.post(URL, {"consumer": "nobody-yet"}, "json").status_code == 201


def test_portal_session_create_without_key_is_401(db):
    response = APIClient().post(URL, {"consumer": "c1"}, format="json")
    assert response.status_code == 401
    assert not PortalSession.objects.exists()


def test_portal_session_list_and_detail_are_not_offered(api):
    # Links are shown once: nothing lists them again.
    created = api.post(URL, {"consumer": "c1"}, "json").json()
    assert api.get(URL).status_code == 405
    assert api.get(f"{URL}/{created['id']}").status_code == 404


def test_portal_session_is_documented_in_the_schema(client):
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/portal-sessions/"]["post"]
    assert {"201", "400", "401"} <= set(operation["responses"])
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    name = request["$ref"].rsplit("/", 1)[1]
    fields = schema["components"]["schemas"][name]["properties"]
    assert {"consumer", "ttl_seconds", "read_only"} <= set(fields)
    assert fields["ttl_seconds"]["maximum"] == 86_400
