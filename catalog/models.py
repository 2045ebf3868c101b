"""Event types of a tenant's catalog: a name, a description, a schema, an example."""

from django.db import models

from webhooks_project.ids import uuid7


class EventType(models.Model):
    """One event type a tenant publishes; its schema, when set, binds the payloads."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="event_types"
    )
    # An event type name (subscriptions.matching.EVENT_TYPE_RE): the identity of
    # the entry, in URLs and in events; it never changes.
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    # A JSON Schema (draft 2020-12) object that payloads of this type must
    # follow, or None: any payload.
    schema = models.JSONField(null=True, blank=True)
    # A payload of this type (valid against the schema), shown to consumers.
    example = models.JSONField(null=True, blank=True)
    deprecated = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)
        constraints = [
            models.UniqueConstraint(
                fields=("tenant", "name"), name="eventtype_tenant_name_unique"
            )
        ]

    def __str__(self) -> str:
        return self.name
