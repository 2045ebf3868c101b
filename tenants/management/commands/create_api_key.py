"""`manage.py create_api_key TENANT`: a new API key for a tenant (id or name)."""

from django.core.management.base import BaseCommand, CommandError

from tenants.selectors import tenant_get_by_id_or_name
from tenants.services import api_key_create


class Command(BaseCommand):
    """Create an API key; print `api_key: <key>`."""

    help = "Create an API key for a tenant given by id or name."

    def add_arguments(self, parser):
        """TENANT and --name."""
        parser.add_argument("tenant", help="The tenant's id or name.")
        parser.add_argument("--name", default="", help="A label for the key.")

    def handle(self, *args, tenant: str, name: str, **options):
        """Create and print."""
        found = tenant_get_by_id_or_name(ident=tenant)
        if found is None:
            raise CommandError(f"No tenant with id or name {tenant!r}.")
        issued = api_key_create(tenant=found, name=name)
        self.stdout.write(f"api_key: {issued.key}")
