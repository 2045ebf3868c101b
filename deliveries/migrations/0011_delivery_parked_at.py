from django.db import migrations, models

INDEX = "delivery_line_in_progress"


class Migration(migrations.Migration):
    # The unique index is built without locking the table against writes (so
    # outside a transaction).
    atomic = False

    dependencies = [
        ("deliveries", "0010_delivery_open_line"),
    ]

    operations = [
        migrations.AddField(
            model_name="delivery",
            name="parked_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f"""CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "{INDEX}"
                    ON "deliveries_delivery" ("endpoint_id", "ordering_key")
                    WHERE "status" = 'in_progress' AND "ordering_key" IS NOT NULL""",
                    f'DROP INDEX CONCURRENTLY IF EXISTS "{INDEX}"',
                ),
            ],
            state_operations=[
                migrations.AddConstraint(
                    model_name="delivery",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(
                            ("ordering_key__isnull", False), ("status", "in_progress")
                        ),
                        fields=("endpoint", "ordering_key"),
                        name=INDEX,
                    ),
                ),
            ],
        ),
    ]
