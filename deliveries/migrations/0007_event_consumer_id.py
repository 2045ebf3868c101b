from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # The index is built without locking the table against writes.
    atomic = False

    dependencies = [
        ("deliveries", "0006_consumer"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(
                condition=models.Q(("consumer__isnull", False)),
                fields=["consumer", "-id"],
                name="event_consumer_id",
            ),
        ),
    ]
