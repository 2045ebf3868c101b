"""Events, their deliveries (one per matching endpoint) and each delivery attempt."""

from django.db import models
from django.db.models import Q
from django.utils import timezone

from subscriptions.consumers import CONSUMER_MAX_LENGTH
from webhooks_project.ids import uuid7

ORDERING_KEY_MAX_LENGTH = 128


class Event(models.Model):
    """An event a tenant published: stored once, fanned out by Delivery rows."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # Foreign keys without an index of their own where a composite index below
    # starts with the same column: every index is written on every insert.
    tenant = models.ForeignKey(
        "tenants.Tenant",
        on_delete=models.CASCADE,
        related_name="events",
        db_index=False,  # event_tenant_id
    )
    event_type = models.CharField(max_length=255)
    # Only this consumer's endpoints receive it (None: every matching endpoint).
    consumer = models.CharField(  # noqa: DJ001
        max_length=CONSUMER_MAX_LENGTH, null=True, blank=True
    )
    payload = models.JSONField()
    # NULL, not "", for "no key": the unique constraint only covers real keys.
    idempotency_key = models.CharField(  # noqa: DJ001
        max_length=255, null=True, blank=True
    )
    # SHA-256 of the canonical request, to tell a repeat from a conflicting reuse.
    request_hash = models.CharField(max_length=64)
    # Deliveries not made by then are settled as expired (None: never).
    expires_at = models.DateTimeField(null=True, blank=True)
    # Per endpoint, deliveries of events with one key go one at a time, in
    # acceptance order (None: no order; deliveries.services.ordering).
    ordering_key = models.CharField(  # noqa: DJ001
        max_length=ORDERING_KEY_MAX_LENGTH, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.UniqueConstraint(
                fields=("tenant", "idempotency_key"),
                condition=Q(idempotency_key__isnull=False),
                name="event_tenant_idempotency_key",
            )
        ]
        indexes = [
            models.Index(fields=("tenant", "-id"), name="event_tenant_id"),
            models.Index(
                fields=("tenant", "event_type", "-id"), name="event_tenant_type_id"
            ),
            # Admin: the event-type search across tenants, newest first.
            models.Index(fields=("event_type", "-id"), name="event_type_id"),
            # `?consumer=`: partial, so events without a consumer do not pay it.
            models.Index(
                fields=("tenant", "consumer", "-id"),
                condition=Q(consumer__isnull=False),
                name="event_tenant_consumer_id",
            ),
            # Admin: the consumer filter across tenants, newest first.
            models.Index(
                fields=("consumer", "-id"),
                condition=Q(consumer__isnull=False),
                name="event_consumer_id",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.id}"


class DeliveryStatus(models.TextChoices):
    """Where a delivery stands."""

    PENDING = "pending", "Pending"
    IN_PROGRESS = "in_progress", "In progress"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    DEAD_LETTER = "dead_letter", "Dead letter"
    # Not made before its event's expires_at: final, never replayed unless forced.
    EXPIRED = "expired", "Expired"


# States a delivery ends in: no worker moves it on again by itself.
FINAL_STATUSES = (
    DeliveryStatus.SUCCEEDED,
    DeliveryStatus.DEAD_LETTER,
    DeliveryStatus.EXPIRED,
)
# States that still need a worker; the sweep watches their lease.
OPEN_STATUSES = (
    DeliveryStatus.PENDING,
    DeliveryStatus.IN_PROGRESS,
    DeliveryStatus.FAILED,
)


class Delivery(models.Model):
    """One event to one endpoint: the outbox row a worker drives to a final state."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # Every status change rewrites a row with a new entry in each of its
    # indexes (no HOT update: indexed columns change), so none is redundant:
    # the foreign keys are covered by the composite indexes that lead with them.
    tenant = models.ForeignKey(
        "tenants.Tenant",
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,  # delivery_tenant_id
    )
    event = models.ForeignKey(
        Event,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,  # delivery_event_endpoint
    )
    endpoint = models.ForeignKey(
        "subscriptions.Endpoint",
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,  # delivery_endpoint_id
    )
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempt_count = models.PositiveIntegerField(default=0)
    # attempt_count when the current round of retries began (a replay starts one).
    round_start = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When the sweep may (re-)enqueue this delivery if nothing has moved it on.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # A manual retry asked for while an attempt was in progress: if that attempt
    # (started before this) fails, the next one is due at once. Recording any
    # attempt clears it.
    retry_requested_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    dead_letter_reason = models.CharField(max_length=255, blank=True, default="")
    succeeded_at = models.DateTimeField(null=True, blank=True)
    dead_lettered_at = models.DateTimeField(null=True, blank=True)
    # The event's expires_at, copied by the fan-out: claims read it without the
    # event (None: never expires; a forced retry clears it).
    expires_at = models.DateTimeField(null=True, blank=True)
    # The event's ordering key, copied by the fan-out, and the delivery's place
    # in its line (endpoint, key): a number from the deliveries_ordering_seq
    # sequence, increasing in acceptance order. Both None without a key.
    ordering_key = models.CharField(  # noqa: DJ001
        max_length=ORDERING_KEY_MAX_LENGTH, null=True, blank=True
    )
    sequence = models.BigIntegerField(null=True, blank=True)
    # Since when a keyed delivery waits for its turn with no message (None: it
    # does not; deliveries.services.ordering).
    parked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-id",)
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=("event", "endpoint"), name="delivery_event_endpoint"
            ),
            # One attempt of a line at a time, whatever claims race.
            models.UniqueConstraint(
                fields=("endpoint", "ordering_key"),
                condition=Q(
                    status=DeliveryStatus.IN_PROGRESS, ordering_key__isnull=False
                ),
                name="delivery_line_in_progress",
            ),
        ]
        indexes = [
            models.Index(fields=("tenant", "-id"), name="delivery_tenant_id"),
            models.Index(
                fields=("tenant", "status", "-id"), name="delivery_tenant_status_id"
            ),
            models.Index(fields=("endpoint", "-id"), name="delivery_endpoint_id"),
            # Admin: the status filter across tenants, newest first.
            models.Index(fields=("status", "-id"), name="delivery_status_id"),
            models.Index(
                fields=("lease_expires_at",),
                condition=Q(status__in=OPEN_STATUSES),
                name="delivery_open_lease",
            ),
            models.Index(
                fields=("tenant", "dead_lettered_at"),
                condition=Q(status=DeliveryStatus.DEAD_LETTER),
                name="delivery_dead_letter",
            ),
            # Admin: the dead-letter queue across tenants, latest first.
            models.Index(
                fields=("-dead_lettered_at", "-id"),
                condition=Q(status=DeliveryStatus.DEAD_LETTER),
                name="delivery_dead_lettered_at",
            ),
            models.Index(
                fields=("succeeded_at",),
                condition=Q(status=DeliveryStatus.SUCCEEDED),
                name="delivery_succeeded_at",
            ),
            # The sweep's expiry: open deliveries of events that expire.
            models.Index(
                fields=("expires_at",),
                condition=Q(status__in=OPEN_STATUSES, expires_at__isnull=False),
                name="delivery_open_expiry",
            ),
            # Ordering: a line's open deliveries in sequence (what is ahead of
            # a delivery, and which goes next); unkeyed rows are not in it.
            models.Index(
                fields=("endpoint", "ordering_key", "sequence"),
                condition=Q(status__in=OPEN_STATUSES, ordering_key__isnull=False),
                name="delivery_open_line",
            ),
        ]

    def __str__(self) -> str:
        return f"delivery {self.id} ({self.status})"

    @property
    def is_expired(self) -> bool:
        """Expired, or past its expiry and not settled as such yet (the sweep)."""
        return self.status == DeliveryStatus.EXPIRED or (
            self.expires_at is not None and self.expires_at <= timezone.now()
        )


class AttemptOutcome(models.TextChoices):
    """How one attempt ended, as a bounded label for metrics and filters."""

    SUCCESS = "success", "2xx"
    HTTP_4XX = "4xx", "4xx"
    HTTP_5XX = "5xx", "5xx"
    HTTP_OTHER = "other", "Other status (1xx/3xx)"
    TIMEOUT = "timeout", "Timeout"
    CONNECTION_ERROR = "connection_error", "Connection error"
    BLOCKED = "blocked", "Blocked by address policy"


class DeliveryAttempt(models.Model):
    """One HTTP request of a delivery and what came back."""

    delivery = models.ForeignKey(
        Delivery,
        on_delete=models.CASCADE,
        related_name="attempts",
        db_index=False,  # attempt_delivery_number
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=20, choices=AttemptOutcome.choices)
    request_headers = models.JSONField(default=dict)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict)
    response_body = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ("delivery", "number")
        # The table is partitioned by week of started_at (migration 0012,
        # deliveries/services/partitions.py): its primary key is (id,
        # started_at) in the database, and a unique (delivery, number) would
        # have to include started_at too. Numbers are unique without it: each
        # is taken under the delivery's row lock (services/recording.py).
        indexes = [
            models.Index(fields=("delivery", "number"), name="attempt_delivery_number")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"


class DeadLetter(Delivery):
    """A dead-lettered delivery: the admin's view of the dead-letter queue."""

    class Meta:
        proxy = True
        verbose_name = "dead letter"
