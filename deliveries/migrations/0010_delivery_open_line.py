from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built without locking the table against writes (so outside a transaction).
    atomic = False

    dependencies = [
        ("deliveries", "0009_ordering"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(
                    ("ordering_key__isnull", False),
                    ("status__in", ("pending", "in_progress", "failed")),
                ),
                fields=["endpoint", "ordering_key", "sequence"],
                name="delivery_open_line",
            ),
        ),
    ]
