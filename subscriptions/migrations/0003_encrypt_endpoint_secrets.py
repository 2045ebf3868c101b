"""Endpoint signing secrets encrypted at rest (subscriptions/encryption.py)."""

from django.db import migrations

import subscriptions.fields
from subscriptions.encryption import decrypt, encrypt, is_encrypted

BATCH = 1000


def _rewrite(apps, schema_editor, convert) -> None:
    """Rewrite every stored secret with `convert`, on the raw column."""
    table = schema_editor.quote_name(
        apps.get_model("subscriptions", "EndpointSecret")._meta.db_table
    )
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT id, secret FROM {table}")  # noqa: S608
        changed = []
        for pk, stored in cursor.fetchall():
            new = convert(stored)
            if new != stored:
                changed.append((new, pk))
        for start in range(0, len(changed), BATCH):
            cursor.executemany(
                f"UPDATE {table} SET secret = %s WHERE id = %s",  # noqa: S608
                changed[start : start + BATCH],
            )


def encrypt_rows(apps, schema_editor) -> None:
    """Encrypt the secrets stored in plaintext."""
    _rewrite(
        apps,
        schema_editor,
        lambda stored: stored if is_encrypted(stored) else encrypt(stored),
    )


def decrypt_rows(apps, schema_editor) -> None:
    """Back to plaintext (for migrating backwards)."""
    _rewrite(apps, schema_editor, decrypt)


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0002_endpoint_failing_since"),
    ]

    operations = [
        migrations.AlterField(
            model_name="endpointsecret",
            name="secret",
            field=subscriptions.fields.EncryptedSecretField(),
        ),
        migrations.RunPython(encrypt_rows, decrypt_rows, elidable=False),
    ]
