"""`manage.py bootstrap_demo --secret whsec_...`: the demo tenant, key and endpoint.

Idempotent: the tenant "demo" and its endpoint at the receiver URL are reused when
they exist; each run issues a fresh API key (only a hash of the old ones is kept)
and makes `--secret` the endpoint's current signing secret.
"""

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from subscriptions.models import Endpoint
from subscriptions.secrets import secret_error
from subscriptions.services import (
    endpoint_create,
    endpoint_rotate_secret,
    endpoint_update,
)
from subscriptions.urlcheck import url_error
from tenants.models import Tenant
from tenants.services import api_key_create, tenant_create_with_key

DEMO_TENANT = "demo"
DEMO_KEY_NAME = "bootstrap_demo"


class Command(BaseCommand):
    """Create or reuse the demo tenant and endpoint; print their ids and a new key."""

    help = (
        "Create (or reuse) the tenant 'demo' and its endpoint at the receiver URL "
        "signed with --secret; print tenant_id, api_key (new each run), endpoint_id."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare --secret and --receiver-url."""
        parser.add_argument(
            "--secret", required=True, help="The endpoint's signing secret, whsec_..."
        )
        parser.add_argument(
            "--receiver-url",
            default="http://127.0.0.1:9000/",
            help="Where the demo endpoint delivers (default %(default)s).",
        )

    def handle(self, *args: object, secret: str, receiver_url: str, **options):
        """Create or reuse, then print the ids and the key."""
        error = secret_error(secret)
        if error:
            raise CommandError(f"--secret: {error}")
        policy_error = url_error(receiver_url)
        if policy_error:
            # The services layer does not check the URL; every delivery will.
            self.stderr.write(
                f"Warning: deliveries to {receiver_url} will fail: {policy_error} "
                "(for local work set WEBHOOK_ALLOWED_NETWORKS=127.0.0.0/8,::1/128)."
            )
        with transaction.atomic():
            tenant, key = self._tenant_and_key()
            endpoint = self._endpoint(tenant=tenant, url=receiver_url, secret=secret)
        if not tenant.is_active:
            self.stderr.write(
                f"Warning: tenant {DEMO_TENANT!r} is inactive: its keys are refused."
            )
        self.stdout.write(f"tenant_id: {tenant.pk}")
        self.stdout.write(f"api_key: {key}")
        self.stdout.write(f"endpoint_id: {endpoint.pk}")

    def _tenant_and_key(self) -> tuple[Tenant, str]:
        """Return the demo tenant (created if missing) and a new clear API key."""
        tenant = Tenant.objects.select_for_update().filter(name=DEMO_TENANT).first()
        if tenant is None:
            issued = tenant_create_with_key(name=DEMO_TENANT, key_name=DEMO_KEY_NAME)
            return issued.api_key.tenant, issued.key
        return tenant, api_key_create(tenant=tenant, name=DEMO_KEY_NAME).key

    def _endpoint(self, *, tenant: Tenant, url: str, secret: str) -> Endpoint:
        """Return the tenant's endpoint at `url`, active and signing with `secret`."""
        endpoint = (
            Endpoint.objects.filter(tenant=tenant, url=url, deleted_at__isnull=True)
            .order_by("created_at")
            .first()
        )
        if endpoint is None:
            return endpoint_create(
                tenant=tenant, url=url, description="Demo receiver", secret=secret
            )
        if endpoint.secret != secret:
            endpoint_rotate_secret(endpoint=endpoint, secret=secret)
        if not endpoint.is_active:
            endpoint_update(endpoint=endpoint, is_active=True)
            self.stderr.write(f"Re-enabled endpoint {endpoint.pk} for the demo.")
        return endpoint
