from django.db import migrations, models

import subscriptions.fields


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0006_consumer"),
    ]

    operations = [
        migrations.AddField(
            model_name="endpoint",
            name="filter",
            field=models.JSONField(
                blank=True,
                default=None,
                help_text='Conditions on the payload, e.g. {"customer.country": '
                '"DE", "total": {"$gte": 100}}; empty: every payload '
                "(docs/filters.md).",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="endpoint",
            name="filter_path",
            field=subscriptions.fields.JsonPathField(
                blank=True, editable=False, null=True
            ),
        ),
    ]
