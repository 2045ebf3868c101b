from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built without locking the table against writes (so outside a transaction).
    atomic = False

    dependencies = [
        ("deliveries", "0007_expiry"),
    ]

    operations = [
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
