import django.db.models.deletion
from django.db import migrations, models

import webhooks_project.ids


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("tenants", "0002_tenant_retention_catalog_version"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventType",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=webhooks_project.ids.uuid7,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("name", models.CharField(max_length=255)),
                ("description", models.TextField(blank=True, default="")),
                ("schema", models.JSONField(blank=True, null=True)),
                ("example", models.JSONField(blank=True, null=True)),
                ("deprecated", models.BooleanField(default=False)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="event_types",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={
                "ordering": ("name",),
                "constraints": [
                    models.UniqueConstraint(
                        fields=("tenant", "name"), name="eventtype_tenant_name_unique"
                    )
                ],
            },
        ),
    ]
