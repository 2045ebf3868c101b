from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Nullable columns without a default are added without rewriting a table;
    # the index is built without locking the table against writes.
    atomic = False

    dependencies = [
        ("deliveries", "0006_consumer"),
    ]

    operations = [
        migrations.AddField(
            model_name="event",
            name="expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="delivery",
            name="expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="delivery",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("in_progress", "In progress"),
                    ("succeeded", "Succeeded"),
                    ("failed", "Failed"),
                    ("dead_letter", "Dead letter"),
                    ("expired", "Expired"),
                ],
                default="pending",
                max_length=16,
            ),
        ),
        AddIndexConcurrently(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(
                    ("expires_at__isnull", False),
                    ("status__in", ("pending", "in_progress", "failed")),
                ),
                fields=["expires_at"],
                name="delivery_open_expiry",
            ),
        ),
    ]
