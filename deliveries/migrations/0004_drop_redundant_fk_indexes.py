"""Drop the single-column foreign-key indexes that composite indexes already cover.

Every insert writes each index, and every status change of a delivery writes a
new entry in each of its indexes. The state says `db_index=False`; the database
only loses the indexes (concurrently: no lock on a live table, and the foreign
keys stay as they are, not dropped and validated again as AlterField would).
"""

from django.db import migrations, models

# (table, column, Django's name for the index `db_index=True` made)
REDUNDANT = [
    ("deliveries_delivery", "endpoint_id", "deliveries_delivery_endpoint_id_76a728d2"),
    ("deliveries_delivery", "event_id", "deliveries_delivery_event_id_ee0aa5a0"),
    ("deliveries_delivery", "tenant_id", "deliveries_delivery_tenant_id_c35d03ff"),
    (
        "deliveries_deliveryattempt",
        "delivery_id",
        "deliveries_deliveryattempt_delivery_id_85da7e15",
    ),
    ("deliveries_event", "tenant_id", "deliveries_event_tenant_id_d113f7d9"),
]


def _field(to: str, related_name: str) -> models.ForeignKey:
    return models.ForeignKey(
        db_index=False,
        on_delete=models.deletion.CASCADE,
        related_name=related_name,
        to=to,
    )


class Migration(migrations.Migration):
    atomic = False  # DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("deliveries", "0003_admin_indexes"),
        ("subscriptions", "0002_endpoint_failing_since"),
        ("tenants", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="delivery",
                    name="endpoint",
                    field=_field("subscriptions.endpoint", "deliveries"),
                ),
                migrations.AlterField(
                    model_name="delivery",
                    name="event",
                    field=_field("deliveries.event", "deliveries"),
                ),
                migrations.AlterField(
                    model_name="delivery",
                    name="tenant",
                    field=_field("tenants.tenant", "deliveries"),
                ),
                migrations.AlterField(
                    model_name="deliveryattempt",
                    name="delivery",
                    field=_field("deliveries.delivery", "attempts"),
                ),
                migrations.AlterField(
                    model_name="event",
                    name="tenant",
                    field=_field("tenants.tenant", "events"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"',
                    reverse_sql=(
                        f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}" '
                        f'ON "{table}" ("{column}")'
                    ),
                )
                for table, column, name in REDUNDANT
            ],
        ),
    ]
