"""`manage.py reencrypt_endpoint_secrets`: every secret under the current key.

After a new key is put first in WEBHOOK_ENCRYPTION_KEYS (or Django's secret key
is rotated with the old one in DJANGO_SECRET_KEY_FALLBACKS), this rewrites every
stored endpoint secret with the new key; the old key can be dropped afterwards.
Secrets still stored in plaintext are encrypted too.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from subscriptions.encryption import SecretUnreadable
from subscriptions.models import EndpointSecret

BATCH = 1000


class Command(BaseCommand):
    """Re-encrypt every endpoint secret with the first configured key."""

    help = __doc__

    def handle(self, *args: object, **options: object) -> None:
        """Rewrite the rows in batches, each in a transaction of its own.

        The field decrypts what it reads (with any configured key) and
        encrypts what it writes (with the first), so a read and a write is
        the whole re-encryption.
        """
        done, last = 0, None
        while True:
            rows = EndpointSecret.objects.order_by("pk")
            if last is not None:
                rows = rows.filter(pk__gt=last)
            try:
                with transaction.atomic():
                    batch = list(rows.select_for_update()[:BATCH])
                    EndpointSecret.objects.bulk_update(batch, ["secret"])
            except SecretUnreadable as exc:
                raise CommandError(str(exc)) from None
            if not batch:
                break
            done += len(batch)
            last = batch[-1].pk
        self.stdout.write(f"re-encrypted {done} endpoint secrets")
