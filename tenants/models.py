"""Tenants and their API keys (stored only as hashes)."""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from webhooks_project.ids import uuid7

# The longest retention a tenant may ask for (a hundred years: "keep them").
MAX_RETENTION_DAYS = 36_500


class Tenant(models.Model):
    """A customer of the platform: owns keys, endpoints and events."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    name = models.CharField(max_length=200, unique=True)
    rate_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Events per second (burst of twice this); empty uses the default.",
    )
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_RETENTION_DAYS)],
        help_text="Days its events are kept; empty uses the default "
        "(WEBHOOK_RETENTION_DAYS).",
    )
    # Bumped by every change to the tenant's event-type catalog, so that each
    # process's cache of compiled schemas sees the change on the next request
    # (the tenant row comes with the API key at authentication).
    catalog_version = models.PositiveBigIntegerField(default=0, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A tenant's API key: the secret is shown once; only its SHA-256 is kept."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    @property
    def is_active(self) -> bool:
        """Whether the key still authenticates."""
        return self.revoked_at is None
