"""Endpoint signing secrets at rest: Fernet tokens (AES-128-CBC with HMAC-SHA256).

A signing secret is the HMAC key itself, so it cannot be stored as a hash like
an API key; it is stored encrypted instead, as ``fernet:<token>``, and
decrypted when an attempt is signed or the API shows it.

Keys: ``WEBHOOK_ENCRYPTION_KEYS`` (Fernet keys, comma-separated): the first
encrypts, every one decrypts, so a new key goes first and the old ones stay
until ``manage.py reencrypt_endpoint_secrets`` has rewritten every secret.
Without it, keys are derived from ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``
in the same way: rotating Django's secret key the Django way (the old one in
``DJANGO_SECRET_KEY_FALLBACKS``) keeps the secrets readable.

A stored value without the prefix is taken as plaintext (rows written before
encryption, or by a process that had not been upgraded yet).
"""

import base64
import functools
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

PREFIX = "fernet:"
_DERIVATION_LABEL = b"webhooks.endpoint-secrets"


class SecretUnreadable(RuntimeError):
    """A stored secret that none of the configured keys decrypts."""


def encrypt(plaintext: str) -> str:
    """The stored form of `plaintext`."""
    return PREFIX + _fernet(_keys()).encrypt(plaintext.encode()).decode()


def decrypt(stored: str) -> str:
    """The plaintext of a stored secret (plaintext passes through)."""
    if not is_encrypted(stored):
        return stored
    return _decrypt(stored, _keys())


def is_encrypted(stored: str) -> bool:
    """Whether `stored` is a token rather than plaintext."""
    return stored.startswith(PREFIX)


_UNREADABLE = (
    "an endpoint secret cannot be decrypted with WEBHOOK_ENCRYPTION_KEYS (or, "
    "without it, keys derived from SECRET_KEY and SECRET_KEY_FALLBACKS): was a "
    "key removed before reencrypt_endpoint_secrets ran?"
)


def _keys() -> tuple[str, ...]:
    configured = tuple(settings.WEBHOOK_ENCRYPTION_KEYS)
    if configured:
        return configured
    return tuple(
        _derived(secret)
        for secret in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)
    )


@functools.cache
def _derived(secret_key: str) -> str:
    digest = hmac.new(secret_key.encode(), _DERIVATION_LABEL, hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode()


@functools.lru_cache(maxsize=16)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


# Every claim signs with its endpoint's secrets: decrypting each time would cost
# more than the rest of the signing, so plaintexts are kept per token and keys.
@functools.lru_cache(maxsize=65536)
def _decrypt(stored: str, keys: tuple[str, ...]) -> str:
    try:
        return _fernet(keys).decrypt(stored.removeprefix(PREFIX).encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(_UNREADABLE) from None
