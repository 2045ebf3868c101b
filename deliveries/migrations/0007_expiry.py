from django.db import migrations, models


class Migration(migrations.Migration):
    # Nullable columns without a default: added without rewriting the tables.

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
    ]
