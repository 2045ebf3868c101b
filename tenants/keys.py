"""API key material: generation, display prefix and hashing."""

import hashlib
import secrets

KEY_PREFIX = "whk_"
# 32 random bytes as URL-safe base64: 43 characters after the prefix.
KEY_RANDOM_BYTES = 32
# Characters of the key kept in clear for display and lookup (not enough to use it).
DISPLAY_PREFIX_LENGTH = 12


def generate_key() -> str:
    """Return a new random API key (`whk_` + 32 random bytes)."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def display_prefix(key: str) -> str:
    """Return the non-secret prefix stored beside the hash."""
    return key[:DISPLAY_PREFIX_LENGTH]


def hash_key(key: str) -> str:
    """Return the SHA-256 hex digest kept instead of the key.

    The key carries 256 bits of entropy, so a fast hash is as safe as a slow one
    here and keeps authentication to one digest per request.
    """
    return hashlib.sha256(key.encode()).hexdigest()
