"""`manage.py create_tenant NAME [--rate-limit N] [--retention-days N]`: a tenant
and its first API key."""

from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from tenants.models import MAX_RETENTION_DAYS
from tenants.services import tenant_create_with_key


class Command(BaseCommand):
    """Create a tenant; print `tenant_id: <id>` and `api_key: <key>`."""

    help = "Create a tenant with an API key (the key is printed once)."

    def add_arguments(self, parser):
        """NAME, --rate-limit and --retention-days."""
        parser.add_argument("name")
        parser.add_argument(
            "--rate-limit",
            type=int,
            default=None,
            help="Events per second (burst 2N); default WEBHOOK_TENANT_RATE_LIMIT.",
        )
        parser.add_argument(
            "--retention-days",
            type=int,
            default=None,
            help="Days its events are kept; default WEBHOOK_RETENTION_DAYS.",
        )

    def handle(
        self,
        *args,
        name: str,
        rate_limit: int | None,
        retention_days: int | None,
        **options,
    ):
        """Create and print."""
        if rate_limit is not None and rate_limit < 1:
            raise CommandError("--rate-limit must be a positive integer.")
        if retention_days is not None and not 1 <= retention_days <= MAX_RETENTION_DAYS:
            raise CommandError(
                f"--retention-days must be 1-{MAX_RETENTION_DAYS} days, not "
                f"{retention_days}."
            )
        try:
            issued = tenant_create_with_key(
                name=name, rate_limit=rate_limit, retention_days=retention_days
            )
        except IntegrityError as exc:
            raise CommandError(f"A tenant named {name!r} already exists.") from exc
        self.stdout.write(f"tenant_id: {issued.api_key.tenant_id}")
        self.stdout.write(f"api_key: {issued.key}")
