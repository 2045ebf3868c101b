"""A manual retry asked for while an attempt was in progress (nullable: instant)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("deliveries", "0004_drop_redundant_fk_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="delivery",
            name="retry_requested_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
