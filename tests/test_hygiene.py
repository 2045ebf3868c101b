"""Key and secret hygiene: what is stored, compared, logged and sent in clear.

API keys are kept as hashes only and compared in constant time; a revoked key
stops at the next request. Endpoint signing secrets and the credentials in an
endpoint's own headers reach the receiver, but never an attempt record or a log.
"""

import base64
import logging
import secrets

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from deliveries.models import Delivery, DeliveryAttempt
from deliveries.services.attempts import delivery_run
from tenants.keys import DISPLAY_PREFIX_LENGTH
from tenants.models import ApiKey
from tenants.services import api_key_create
from tests.factories import make_event

pytestmark = pytest.mark.django_db

CREDENTIAL_HEADERS = {
    "Authorization": "Bearer receiver-token-4f9c2a",
    "X-Api-Key": "receiver-key-8d1e77",
    "Cookie": "session=receiver-cookie-31b0",
    # Redacted by the name's pattern, not a fixed list
    "X-Shop-Access-Token": "receiver-token-70aa1c",
    "X-Client-Secret": "receiver-secret-5e2b90",
    "Private-Key-Id": "receiver-key-id-c4d3",
    "X-Session": "receiver-session-ab12",
    "X-Auth": "receiver-auth-99f0",
}


def table_dump(model) -> str:
    """Every row of `model`'s table, as `SELECT *` returns it, in one string."""
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")
        return "\n".join(repr(row) for row in cursor.fetchall())


def attempt_again(delivery) -> None:
    """Make the delivery due now and run its next attempt."""
    Delivery.objects.filter(pk=delivery.pk).update(
        status="pending", next_attempt_at=timezone.now()
    )
    delivery_run(delivery_id=delivery.pk)


def client_for(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_forms(secret: str) -> list[str]:
    """The secret and its base64 part: neither may leak."""
    return [secret, secret.removeprefix("whsec_")]


def test_api_key_table_dump_holds_no_full_key(api, issued_key, tenant):
    # given: keys made by the bootstrap service and through the API
    keys = [issued_key.key, api_key_create(tenant=tenant, name="svc").key]
    keys.append(api.post("/api/v1/api-keys", {"name": "ci"}, "json").json()["key"])
    # when
    dump = table_dump(ApiKey)
    # then: neither a key nor its secret part past the display prefix
    assert ApiKey.objects.filter(tenant=tenant).count() == 3
    for key in keys:
        assert key not in dump
        assert key[DISPLAY_PREFIX_LENGTH:] not in dump
        assert key[:DISPLAY_PREFIX_LENGTH] in dump


def test_api_key_with_right_prefix_and_wrong_tail_is_401(issued_key):
    key = issued_key.key
    prefix, tail = key[:DISPLAY_PREFIX_LENGTH], key[DISPLAY_PREFIX_LENGTH:]
    flipped_last = key[:-1] + ("A" if key[-1] != "A" else "B")
    candidates = [
        flipped_last,
        prefix + secrets.token_urlsafe(32)[: len(tail)],
        prefix + tail[:-1],
        prefix + tail + "x",
        prefix,
    ]
    assert client_for(key).get("/api/v1/endpoints").status_code == 200
    for candidate in candidates:
        response = client_for(candidate).get("/api/v1/endpoints")
        assert response.status_code == 401, candidate
        header = APIClient()
        header.credentials(HTTP_X_API_KEY=candidate)
        assert header.get("/api/v1/endpoints").status_code == 401


def test_api_key_revocation_is_effective_on_the_next_request(api, tenant):
    # given: a second key in use, with its last use just recorded
    created = api.post("/api/v1/api-keys", {"name": "temp"}, "json").json()
    temp = client_for(created["key"])
    assert temp.get("/api/v1/endpoints").status_code == 200
    # when
    assert api.delete(f"/api/v1/api-keys/{created['id']}").status_code == 204
    # then: refused at once, by either header, and gone from the list
    assert temp.get("/api/v1/endpoints").status_code == 401
    header = APIClient()
    header.credentials(HTTP_X_API_KEY=created["key"])
    assert header.get("/api/v1/events").status_code == 401
    listed = api.get("/api/v1/api-keys").json()["results"]
    assert created["id"] not in {item["id"] for item in listed}


def test_api_key_never_logged_when_created(api, caplog):
    caplog.set_level(logging.DEBUG)
    key = api.post("/api/v1/api-keys", {"name": "logged"}, "json").json()["key"]
    assert client_for(key).get("/api/v1/endpoints").status_code == 200
    assert key not in caplog.text
    assert key[DISPLAY_PREFIX_LENGTH:] not in caplog.text


@pytest.fixture
def delivered(api, tenant, receiver):
    """An endpoint with a known secret and credential headers, and one delivery."""
    secret = new_secret()
    receiver.secrets = (secret,)
    created = api.post(
        "/api/v1/endpoints",
        {"url": receiver.url, "secret": secret, "headers": CREDENTIAL_HEADERS},
        "json",
    )
    assert created.status_code == 201, created.content
    _, [delivery] = make_event(tenant=tenant)
    decision = delivery_run(delivery_id=delivery.pk)
    assert decision.status == "succeeded"
    assert receiver.wait_for(1)
    return {"secret": secret, "delivery": delivery, "endpoint": created.json()}


def test_endpoint_secret_never_in_attempt_records(delivered, receiver):
    # a failed attempt records response headers and body too
    receiver.set_statuses([500])
    attempt_again(delivered["delivery"])
    assert DeliveryAttempt.objects.count() == 2
    assert receiver.received[0].verified is True
    dump = table_dump(DeliveryAttempt) + table_dump(Delivery)
    for form in secret_forms(delivered["secret"]):
        assert form not in dump


def test_endpoint_credential_headers_redacted_in_records_but_sent_in_clear(
    delivered, receiver, api
):
    # then: the receiver got them in clear
    request = receiver.received[0]
    for name, value in CREDENTIAL_HEADERS.items():
        assert request.header(name) == value
    # and the attempt record (and the API showing it) says "[redacted]"
    attempt = DeliveryAttempt.objects.get(delivery=delivered["delivery"])
    for name in CREDENTIAL_HEADERS:
        assert attempt.request_headers[name] == "[redacted]"
    assert attempt.request_headers["webhook-id"] == str(delivered["delivery"].event_id)
    shown = api.get(f"/api/v1/deliveries/{delivered['delivery'].pk}/attempts")
    assert shown.json()["results"][0]["request_headers"]["Cookie"] == "[redacted]"
    dump = table_dump(DeliveryAttempt)
    for value in CREDENTIAL_HEADERS.values():
        assert value not in dump
        assert value not in shown.content.decode()


def test_endpoint_secrets_and_credentials_never_logged(api, tenant, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    # when: an endpoint is created, changed and rotated with given secrets,
    first, second, third = new_secret(), new_secret(), new_secret()
    receiver.secrets = (first, second, third)
    endpoint = api.post(
        "/api/v1/endpoints",
        {"url": receiver.url, "secret": first, "headers": CREDENTIAL_HEADERS},
        "json",
    ).json()
    path = f"/api/v1/endpoints/{endpoint['id']}"
    assert api.patch(path, {"secret": second}, "json").status_code == 200
    rotated = api.post(f"{path}/secret/rotate", {"secret": third}, "json")
    generated = api.post(f"{path}/secret/rotate", {}, "json").json()["secret"]
    assert rotated.status_code == 200
    # and deliveries are signed with them, one refused, one accepted
    receiver.set_statuses([401, 200])
    _, [delivery] = make_event(tenant=tenant)
    delivery_run(delivery_id=delivery.pk)
    attempt_again(delivery)
    assert receiver.wait_for(2)
    # then: no secret, nor a credential header value, in any log record
    assert "delivery" in caplog.text
    for secret in (first, second, third, generated):
        for form in secret_forms(secret):
            assert form not in caplog.text
    for value in CREDENTIAL_HEADERS.values():
        assert value not in caplog.text
