"""Indexes behind the admin's cross-tenant lists (status filter, DLQ, event type).

Built concurrently: on tables of millions of rows a plain CREATE INDEX would
block ingestion and deliveries for as long as the build takes.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("deliveries", "0002_deadletter"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="delivery",
            index=models.Index(fields=["status", "-id"], name="delivery_status_id"),
        ),
        AddIndexConcurrently(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(("status", "dead_letter")),
                fields=["-dead_lettered_at", "-id"],
                name="delivery_dead_lettered_at",
            ),
        ),
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(fields=["event_type", "-id"], name="event_type_id"),
        ),
    ]
