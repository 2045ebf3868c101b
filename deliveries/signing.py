"""Standard Webhooks signatures: one pure function to sign, one to verify."""

import base64
import hashlib
import hmac
import time

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)


def secret_key_bytes(secret: str) -> bytes:
    """Return the HMAC key of a `whsec_<base64>` secret."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(*, msg_id: str, timestamp: int, body: bytes, secrets: list[str]) -> str:
    """Return the `webhook-signature` value: `v1,<sig>` per secret, space-separated."""
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    signatures = []
    for secret in secrets:
        digest = hmac.new(secret_key_bytes(secret), signed, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode())
    return " ".join(signatures)


def verify(
    *,
    secret: str,
    headers: dict[str, str],
    body: bytes,
    tolerance: int = 300,
    now: float | None = None,
) -> bool:
    """Whether any signature in `headers` is valid for `secret` and recent enough."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    raw_timestamp = lowered.get("webhook-timestamp", "")
    if not msg_id or not raw_timestamp.isdigit():
        return False
    timestamp = int(raw_timestamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = sign(msg_id=msg_id, timestamp=timestamp, body=body, secrets=[secret])
    expected_sig = expected.split(",", 1)[1]
    for candidate in lowered.get("webhook-signature", "").split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected_sig):
            return True
    return False
