"""`manage.py reencrypt_endpoint_secrets`: every secret under the current key.

After a new key is put first in WEBHOOK_ENCRYPTION_KEYS (or Django's secret key
is rotated with the old one in DJANGO_SECRET_KEY_FALLBACKS), this rewrites every
stored endpoint secret with the new key; the old key can be dropped afterwards.
Secrets still stored in plaintext are encrypted too.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from subscriptions.encryption import SecretUnreadable, reencrypt
from subscriptions.models import EndpointSecret

BATCH = 1000


class Command(BaseCommand):
    """Re-encrypt every endpoint secret with the first configured key."""

    help = __doc__

    def handle(self, *args: object, **options: object) -> None:
        """Rewrite the rows in batches, each in a transaction of its own."""
        done, last = 0, None
        while True:
            rows = EndpointSecret.objects.order_by("pk")
            if last is not None:
                rows = rows.filter(pk__gt=last)
            batch = list(rows.values_list("pk", flat=True)[:BATCH])
            if not batch:
                break
            try:
                done += _reencrypt(batch)
            except SecretUnreadable as exc:
                raise CommandError(str(exc)) from None
            last = batch[-1]
        self.stdout.write(f"re-encrypted {done} endpoint secrets")


@transaction.atomic
def _reencrypt(pks: list) -> int:
    """Rewrite these rows' raw column (locked) with the current key."""
    table = EndpointSecret._meta.db_table

    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT id, secret FROM "{table}" WHERE id = ANY(%s) FOR UPDATE',  # noqa: S608
            [pks],
        )
        rows = [(reencrypt(stored), pk) for pk, stored in cursor.fetchall()]
        cursor.executemany(
            f'UPDATE "{table}" SET secret = %s WHERE id = %s',  # noqa: S608
            rows,
        )
    return len(rows)
