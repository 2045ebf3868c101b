"""Portal sessions: a producer's single-use link into one consumer's pages."""

from django.db import models
from django.utils import timezone

from subscriptions.consumers import CONSUMER_MAX_LENGTH
from webhooks_project.ids import uuid7


class PortalSession(models.Model):
    """What one portal link opens: a tenant's consumer, until `expires_at`.

    The link's token is kept only as its SHA-256: a database dump opens nothing.
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="portal_sessions"
    )
    consumer = models.CharField(max_length=CONSUMER_MAX_LENGTH)
    read_only = models.BooleanField(default=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    # When the link was opened; a link opens one browser session only.
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-id",)
        indexes = [
            models.Index(fields=("tenant", "-id"), name="portalsession_tenant_id"),
        ]

    def __str__(self) -> str:
        return f"portal of {self.consumer} until {self.expires_at:%Y-%m-%d %H:%M}"

    @property
    def is_expired(self) -> bool:
        """Whether the session (and its link) no longer opens anything."""
        return self.expires_at <= timezone.now()
