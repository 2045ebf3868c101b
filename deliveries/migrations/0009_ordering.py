from django.db import migrations, models

# The numbers that put a line's deliveries in acceptance order (Delivery.sequence).
SEQUENCE = "deliveries_ordering_seq"


class Migration(migrations.Migration):
    dependencies = [
        ("deliveries", "0008_delivery_open_expiry"),
    ]

    operations = [
        migrations.AddField(
            model_name="event",
            name="ordering_key",
            field=models.CharField(blank=True, max_length=128, null=True),
        ),
        migrations.AddField(
            model_name="delivery",
            name="ordering_key",
            field=models.CharField(blank=True, max_length=128, null=True),
        ),
        migrations.AddField(
            model_name="delivery",
            name="sequence",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.RunSQL(
            f"CREATE SEQUENCE {SEQUENCE} AS bigint",
            f"DROP SEQUENCE {SEQUENCE}",
        ),
    ]
