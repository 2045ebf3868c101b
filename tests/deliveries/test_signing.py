"""Standard Webhooks signing (deliveries.signing) and the envelope (envelope.py).

Signatures are checked against the `standardwebhooks` and `svix` packages, a
hand-computed HMAC and the published Standard Webhooks test vector.
"""

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
import standardwebhooks
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError as SvixVerificationError

from deliveries.envelope import RESERVED_HEADERS, envelope_body, signed_headers
from deliveries.models import Event
from deliveries.signing import secret_key_bytes, sign, verify
from webhooks_project.version import USER_AGENT

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"\xaa" * 32).decode()
MSG_ID = "msg_2a5hQmJxXzK0kR9bLpU1"
BODY = b'{"id":"msg_2a5hQmJxXzK0kR9bLpU1","type":"order.created","data":{"n":1}}'


def make_secret(seed: int) -> str:
    """A deterministic, valid `whsec_` secret."""
    return "whsec_" + base64.b64encode(bytes([seed]) * 32).decode()


def headers_for(*, signature: str, timestamp: int, msg_id: str = MSG_ID) -> dict:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_sign_matches_hand_computed_hmac():
    timestamp = 1_700_000_000
    key = bytes(range(32))
    signed = MSG_ID.encode() + b"." + b"1700000000" + b"." + BODY
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    assert sign(msg_id=MSG_ID, timestamp=timestamp, body=BODY, secrets=[SECRET]) == (
        "v1," + expected.decode()
    )


def test_sign_matches_published_standard_webhooks_vector():
    # The test vector of the Standard Webhooks / Svix reference libraries.
    signature = sign(
        msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
        body=b'{"test": 2432232314}',
        secrets=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_secret_key_bytes_decodes_base64_after_prefix():
    assert secret_key_bytes(SECRET) == bytes(range(32))


def test_sign_verified_by_standardwebhooks_and_svix():
    # given
    now = int(time.time())
    signature = sign(msg_id=MSG_ID, timestamp=now, body=BODY, secrets=[SECRET])
    headers = headers_for(signature=signature, timestamp=now)
    # when / then: both libraries accept it (svix raises when it does not)
    expected = json.loads(BODY)
    assert standardwebhooks.Webhook(SECRET).verify(BODY.decode(), headers) == expected
    SvixWebhook(SECRET).verify(BODY.decode(), headers)


def test_sign_rejected_by_libraries_for_other_secret():
    now = int(time.time())
    signature = sign(msg_id=MSG_ID, timestamp=now, body=BODY, secrets=[SECRET])
    headers = headers_for(signature=signature, timestamp=now)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(OTHER_SECRET).verify(BODY.decode(), headers)
    with pytest.raises(SvixVerificationError):
        SvixWebhook(OTHER_SECRET).verify(BODY.decode(), headers)


def test_sign_several_secrets_space_separated_each_verifies():
    # given
    now = int(time.time())
    secrets = [make_secret(seed) for seed in (1, 2, 3)]
    # when
    signature = sign(msg_id=MSG_ID, timestamp=now, body=BODY, secrets=secrets)
    # then: one v1 signature per secret, in order
    parts = signature.split(" ")
    assert len(parts) == 3
    for secret, part in zip(secrets, parts, strict=True):
        assert part == sign(msg_id=MSG_ID, timestamp=now, body=BODY, secrets=[secret])
        headers = headers_for(signature=signature, timestamp=now)
        standardwebhooks.Webhook(secret).verify(BODY.decode(), headers)
        SvixWebhook(secret).verify(BODY.decode(), headers)
        assert verify(secret=secret, headers=headers, body=BODY)
    assert not verify(
        secret=make_secret(4),
        headers=headers_for(signature=signature, timestamp=now),
        body=BODY,
    )


def test_verify_accepts_standardwebhooks_signature():
    now = datetime.now(UTC).replace(microsecond=0)
    signature = standardwebhooks.Webhook(SECRET).sign(MSG_ID, now, BODY.decode())
    headers = headers_for(signature=signature, timestamp=int(now.timestamp()))
    assert verify(secret=SECRET, headers=headers, body=BODY)


def test_verify_accepts_header_names_in_any_case():
    now = int(time.time())
    signature = sign(msg_id=MSG_ID, timestamp=now, body=BODY, secrets=[SECRET])
    headers = {
        "Webhook-Id": MSG_ID,
        "WEBHOOK-TIMESTAMP": str(now),
        "Webhook-Signature": signature,
    }
    assert verify(secret=SECRET, headers=headers, body=BODY)


def test_verify_rejects_tampered_body():
    now = int(time.time())
    signature = sign(msg_id=MSG_ID, timestamp=now, body=BODY, secrets=[SECRET])
    headers = headers_for(signature=signature, timestamp=now)
    assert verify(secret=SECRET, headers=headers, body=BODY)
    assert not verify(secret=SECRET, headers=headers, body=BODY.replace(b"1", b"2"))
    assert not verify(secret=SECRET, headers=headers, body=BODY + b" ")


def test_verify_rejects_wrong_secret():
    now = int(time.time())
    signature = sign(msg_id=MSG_ID, timestamp=now, body=BODY, secrets=[SECRET])
    headers = headers_for(signature=signature, timestamp=now)
    assert not verify(secret=OTHER_SECRET, headers=headers, body=BODY)


def test_verify_rejects_other_message_id():
    now = int(time.time())
    signature = sign(msg_id=MSG_ID, timestamp=now, body=BODY, secrets=[SECRET])
    headers = headers_for(signature=signature, timestamp=now, msg_id="msg_other")
    assert not verify(secret=SECRET, headers=headers, body=BODY)


@pytest.mark.parametrize(
    ("age", "accepted"),
    [(0, True), (299, True), (300, True), (301, False), (3600, False), (-301, False)],
)
def test_verify_enforces_timestamp_tolerance(age, accepted):
    now = 1_700_000_000
    timestamp = now - age
    signature = sign(msg_id=MSG_ID, timestamp=timestamp, body=BODY, secrets=[SECRET])
    headers = headers_for(signature=signature, timestamp=timestamp)
    assert verify(secret=SECRET, headers=headers, body=BODY, now=now) is accepted


def test_verify_custom_tolerance():
    now = 1_700_000_000
    timestamp = now - 60
    signature = sign(msg_id=MSG_ID, timestamp=timestamp, body=BODY, secrets=[SECRET])
    headers = headers_for(signature=signature, timestamp=timestamp)
    assert verify(secret=SECRET, headers=headers, body=BODY, now=now, tolerance=60)
    assert not verify(secret=SECRET, headers=headers, body=BODY, now=now, tolerance=59)


@pytest.mark.parametrize(
    "missing", ["webhook-id", "webhook-timestamp", "webhook-signature"]
)
def test_verify_rejects_missing_header(missing):
    now = int(time.time())
    signature = sign(msg_id=MSG_ID, timestamp=now, body=BODY, secrets=[SECRET])
    headers = headers_for(signature=signature, timestamp=now)
    assert verify(secret=SECRET, headers=headers, body=BODY)
    del headers[missing]
    assert not verify(secret=SECRET, headers=headers, body=BODY)


@pytest.mark.parametrize("signature_prefix", ["v2,", "v1a,", ""])
def test_verify_rejects_other_signature_versions(signature_prefix):
    now = int(time.time())
    signature = sign(msg_id=MSG_ID, timestamp=now, body=BODY, secrets=[SECRET])
    forged = signature_prefix + signature.removeprefix("v1,")
    headers = headers_for(signature=forged, timestamp=now)
    assert not verify(secret=SECRET, headers=headers, body=BODY)


def test_verify_rejects_non_numeric_timestamp():
    now = int(time.time())
    signature = sign(msg_id=MSG_ID, timestamp=now, body=BODY, secrets=[SECRET])
    headers = headers_for(signature=signature, timestamp=now)
    headers["webhook-timestamp"] = f"{now}.0"
    assert not verify(secret=SECRET, headers=headers, body=BODY)


def make_unsaved_event(*, payload: dict, created_at: datetime) -> Event:
    return Event(
        id=uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057"),
        event_type="order.created",
        payload=payload,
        created_at=created_at,
    )


def test_envelope_body_is_compact_json_with_four_keys():
    # given
    created = datetime(2025, 3, 4, 5, 6, 7, 891234, tzinfo=UTC)
    payload = {"order_id": 42, "items": [{"sku": "a", "qty": 2}], "note": "café"}
    event = make_unsaved_event(payload=payload, created_at=created)
    # when
    body = envelope_body(event)
    # then
    envelope = json.loads(body)
    assert list(envelope) == ["id", "type", "timestamp", "data"]
    assert envelope == {
        "id": "01890a5d-ac96-774b-bcce-b302099a8057",
        "type": "order.created",
        "timestamp": "2025-03-04T05:06:07.891Z",
        "data": payload,
    }
    assert body == json.dumps(
        envelope, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert b": " not in body
    assert b", " not in body


@pytest.mark.django_db
def test_envelope_body_timestamp_of_saved_event_ends_with_z(tenant):
    # given an event as stored (created_at from the database)
    event = Event.objects.create(
        tenant=tenant, event_type="user.signed_up", payload={"u": 1}, request_hash="x"
    )
    event.refresh_from_db()
    # when
    envelope = json.loads(envelope_body(event))
    # then
    assert envelope["timestamp"].endswith("Z")
    assert "+" not in envelope["timestamp"]
    parsed = datetime.fromisoformat(envelope["timestamp"].replace("Z", "+00:00"))
    assert abs(parsed - event.created_at).total_seconds() < 0.001
    assert envelope["id"] == str(event.id)


def test_signed_headers_sign_the_body_for_the_event_id():
    now = int(time.time())
    headers = signed_headers(
        event_id=MSG_ID, body=BODY, secrets=[SECRET, OTHER_SECRET], timestamp=now
    )
    assert headers["webhook-id"] == MSG_ID
    assert headers["webhook-timestamp"] == str(now)
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT
    assert len(headers["webhook-signature"].split(" ")) == 2
    standardwebhooks.Webhook(SECRET).verify(BODY.decode(), headers)
    SvixWebhook(OTHER_SECRET).verify(BODY.decode(), headers)


def test_signed_headers_drop_reserved_extra_names_case_insensitively():
    # given endpoint headers trying to override every reserved name
    extra = {name.upper(): "forged" for name in RESERVED_HEADERS}
    extra.update(
        {
            "Webhook-Signature": "v1,forged",
            "Content-Type": "text/plain",
            "uSeR-aGeNt": "evil/1.0",
            "X-Team": "payments",
            "Authorization": "Bearer abc",
        }
    )
    # when
    headers = signed_headers(
        event_id=MSG_ID, body=BODY, secrets=[SECRET], timestamp=1_700_000_000
    )
    with_extra = signed_headers(
        event_id=MSG_ID,
        body=BODY,
        secrets=[SECRET],
        extra=extra,
        timestamp=1_700_000_000,
    )
    # then: the platform's headers are intact, the endpoint's own ones kept
    lowered = [name.lower() for name in with_extra]
    assert len(lowered) == len(set(lowered))
    assert {k: v for k, v in with_extra.items() if k.lower() in RESERVED_HEADERS} == (
        headers
    )
    assert with_extra["X-Team"] == "payments"
    assert with_extra["Authorization"] == "Bearer abc"
    assert "forged" not in with_extra.values()
