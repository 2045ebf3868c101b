"""Endpoint signing secrets at rest: encrypted, readable after key rotation."""

import base64
import importlib
import io

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection

from deliveries.services.claim import deliveries_claim
from subscriptions.encryption import PREFIX, SecretUnreadable
from subscriptions.models import Endpoint, EndpointSecret
from subscriptions.secrets import generate_secret
from tests.factories import make_endpoint, make_event

pytestmark = pytest.mark.django_db

migration = importlib.import_module(
    "subscriptions.migrations.0003_encrypt_endpoint_secrets"
)


def reencrypt() -> str:
    out = io.StringIO()
    call_command("reencrypt_endpoint_secrets", stdout=out)
    return out.getvalue()


def stored(endpoint: Endpoint) -> list[str]:
    """The endpoint's secret column as PostgreSQL holds it."""
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT secret FROM "{EndpointSecret._meta.db_table}" '
            "WHERE endpoint_id = %s ORDER BY created_at",
            [endpoint.pk],
        )
        return [row[0] for row in cursor.fetchall()]


def store_raw(endpoint: Endpoint, value: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{EndpointSecret._meta.db_table}" SET secret = %s '
            "WHERE endpoint_id = %s",
            [value, endpoint.pk],
        )


def read_back(endpoint: Endpoint) -> str:
    return Endpoint.objects.get(pk=endpoint.pk).secret


def test_secret_is_stored_encrypted_and_read_back_in_clear(api):
    # when: an endpoint is created through the API with a given secret
    secret = generate_secret()
    response = api.post(
        "/api/v1/endpoints",
        {"url": "https://example.com/hook", "secret": secret},
        format="json",
    )
    assert response.status_code == 201, response.content
    endpoint = Endpoint.objects.get(pk=response.json()["id"])
    # then: the column holds a token with neither the secret nor its key in it
    [column] = stored(endpoint)
    assert column.startswith(PREFIX)
    assert secret not in column
    assert secret.removeprefix("whsec_") not in column
    # and the model, the API and a delivery's claim read the secret itself
    assert read_back(endpoint) == secret
    assert api.get(f"/api/v1/endpoints/{endpoint.pk}/secret").json()["secret"] == secret
    _, [delivery] = make_event(tenant=endpoint.tenant)
    [claimed] = deliveries_claim(delivery_ids=[delivery.pk])
    assert claimed.endpoint.active_secrets() == [secret]


def test_same_secret_twice_makes_two_different_tokens(tenant):
    secret = generate_secret()
    first = make_endpoint(tenant=tenant, secret=secret)
    second = make_endpoint(tenant=tenant, secret=secret)
    assert stored(first) != stored(second)
    assert read_back(first) == read_back(second) == secret


def test_new_key_first_old_key_still_decrypts_until_reencrypted(tenant, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.WEBHOOK_ENCRYPTION_KEYS = [old]
    endpoint = make_endpoint(tenant=tenant)
    secret = read_back(endpoint)
    # when: a new key goes first; the old one stays
    settings.WEBHOOK_ENCRYPTION_KEYS = [new, old]
    assert read_back(endpoint) == secret
    reencrypt()
    # then: the new key alone reads it
    settings.WEBHOOK_ENCRYPTION_KEYS = [new]
    assert read_back(endpoint) == secret
    # and without any key that wrote it, reading fails with the reason
    settings.WEBHOOK_ENCRYPTION_KEYS = [old]
    with pytest.raises(SecretUnreadable, match="reencrypt_endpoint_secrets"):
        read_back(endpoint)
    with pytest.raises(CommandError, match="cannot be decrypted"):
        call_command("reencrypt_endpoint_secrets")


def test_django_secret_key_rotation_keeps_secrets_readable(tenant, settings):
    # given: no encryption keys of its own: keys derived from SECRET_KEY
    settings.WEBHOOK_ENCRYPTION_KEYS = []
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "first-" + "k" * 50, []
    endpoint = make_endpoint(tenant=tenant)
    secret = read_back(endpoint)
    # when: rotated the Django way, the old key among the fallbacks
    settings.SECRET_KEY = "second-" + "k" * 50
    settings.SECRET_KEY_FALLBACKS = ["first-" + "k" * 50]
    assert read_back(endpoint) == secret
    reencrypt()
    # then: once re-encrypted, the old key can go
    settings.SECRET_KEY_FALLBACKS = []
    assert read_back(endpoint) == secret


def test_plaintext_rows_are_read_and_encrypted_by_the_migration(tenant):
    # given: a row written before encryption
    endpoint = make_endpoint(tenant=tenant)
    secret = read_back(endpoint)
    store_raw(endpoint, secret)
    assert read_back(endpoint) == secret  # plaintext passes through
    # when
    migration.encrypt_rows(apps, connection.schema_editor())
    # then
    [column] = stored(endpoint)
    assert column.startswith(PREFIX)
    assert read_back(endpoint) == secret
    # and backwards: plaintext again
    migration.decrypt_rows(apps, connection.schema_editor())
    assert stored(endpoint) == [secret]


def test_reencrypt_command_encrypts_plaintext_rows(tenant):
    endpoint = make_endpoint(tenant=tenant)
    secret = read_back(endpoint)
    store_raw(endpoint, secret)
    assert reencrypt() == "re-encrypted 1 endpoint secrets\n"
    [column] = stored(endpoint)
    assert column.startswith(PREFIX)
    assert base64.b64decode(secret.removeprefix("whsec_")) not in column.encode()
    assert read_back(endpoint) == secret
