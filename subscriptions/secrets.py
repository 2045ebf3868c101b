"""Endpoint signing secrets: `whsec_` + base64 of 24 to 64 random bytes."""

import base64
import binascii
import secrets

from deliveries.signing import SECRET_PREFIX

GENERATED_SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def generate_secret() -> str:
    """Return a new random endpoint secret."""
    return (
        SECRET_PREFIX
        + base64.b64encode(secrets.token_bytes(GENERATED_SECRET_BYTES)).decode()
    )


def secret_error(value: str) -> str | None:
    """Why `value` is not an acceptable secret, or None."""
    if not value.startswith(SECRET_PREFIX):
        return f"A secret must start with '{SECRET_PREFIX}'."
    try:
        raw = base64.b64decode(value.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return "A secret must be base64 after its prefix."
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        return (
            f"A secret must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes "
            f"(got {len(raw)})."
        )
    return None
