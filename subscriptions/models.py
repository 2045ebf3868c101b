"""Endpoints (subscriptions) and their signing secrets."""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from subscriptions.consumers import CONSUMER_MAX_LENGTH
from subscriptions.fields import EncryptedSecretField, JsonPathField
from webhooks_project.ids import uuid7

# The most requests an endpoint may be allowed to have in flight at once.
MAX_IN_FLIGHT_LIMIT = 1000


class Endpoint(models.Model):
    """A receiver URL that wants some or all of a tenant's event types."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="endpoints"
    )
    url = models.CharField(max_length=2048)
    # The producer's customer this endpoint belongs to (None: the producer's own).
    consumer = models.CharField(  # noqa: DJ001
        max_length=CONSUMER_MAX_LENGTH, null=True, blank=True
    )
    description = models.TextField(blank=True, default="")
    event_types = ArrayField(models.CharField(max_length=255), default=list, blank=True)
    # Conditions on the payload (subscriptions.filters; None: every payload), and
    # their compiled form, which the fan-out applies (written with `filter` by
    # the services, never alone).
    filter = models.JSONField(
        null=True,
        blank=True,
        default=None,
        help_text='Conditions on the payload, e.g. {"customer.country": "DE", '
        '"total": {"$gte": 100}}; empty: every payload (docs/filters.md).',
    )
    filter_path = JsonPathField(null=True, blank=True, editable=False)
    headers = models.JSONField(default=dict, blank=True)
    rate_limit = models.PositiveIntegerField(null=True, blank=True)
    max_in_flight = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_IN_FLIGHT_LIMIT)],
        help_text="Most requests in flight to this endpoint at once; unset: the "
        "server's default (WEBHOOK_ENDPOINT_MAX_IN_FLIGHT).",
    )
    is_active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=255, blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Start of the current run of failures (None after a success).
    failing_since = models.DateTimeField(null=True, blank=True)
    # When the tenant deleted it: gone from every list and inactive at once; its
    # deliveries and attempts are deleted in batches by the hourly cleanup, and
    # then the row itself (so that a delete request does bounded work).
    deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-id",)
        indexes = [
            models.Index(fields=("tenant", "is_active"), name="endpoint_tenant_active"),
            GinIndex(fields=("event_types",), name="endpoint_event_types_gin"),
            # A consumer's endpoints: the portal, `?consumer=` and the fan-out of
            # an event addressed to one consumer.
            models.Index(
                fields=("tenant", "consumer"),
                condition=Q(consumer__isnull=False, deleted_at__isnull=True),
                name="endpoint_tenant_consumer",
            ),
            models.Index(
                fields=("deleted_at",),
                condition=Q(deleted_at__isnull=False),
                name="endpoint_deleted",
            ),
        ]

    def __str__(self) -> str:
        return self.url

    @property
    def in_flight_cap(self) -> int:
        """Requests it may have in flight at once (0: no cap)."""
        return self.max_in_flight or settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT

    def active_secrets(self) -> list[str]:
        """Secrets that sign now, newest first (several during a rotation)."""
        now = timezone.now()
        return [
            secret.secret
            for secret in sorted(
                self.secrets.all(), key=lambda item: item.created_at, reverse=True
            )
            if secret.expires_at is None or secret.expires_at > now
        ]

    @property
    def secret(self) -> str:
        """The current (newest) signing secret."""
        secrets = self.active_secrets()
        return secrets[0] if secrets else ""


class EndpointSecret(models.Model):
    """One signing secret of an endpoint; an expired one no longer signs."""

    endpoint = models.ForeignKey(
        Endpoint, on_delete=models.CASCADE, related_name="secrets"
    )
    secret = EncryptedSecretField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(
                fields=("endpoint",),
                condition=Q(expires_at__isnull=True),
                name="endpoint_one_current_secret",
            )
        ]

    def __str__(self) -> str:
        return f"secret of {self.endpoint_id} from {self.created_at:%Y-%m-%d %H:%M}"
