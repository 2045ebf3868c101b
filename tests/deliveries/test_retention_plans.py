"""The purge's statement reads every table through an index, never a scan.

On 20,000 expired events (40,000 deliveries, 20,000 attempts) of one tenant and
20,000 fresh ones of another, analyzed (small tables, where a join would rather
scan them whole): the events are found within the cutoff's id range through
the (tenant, -id) index or the primary key (whichever the statistics favour:
both stop at the batch), their deliveries through (event, endpoint), the
attempts through (delivery, number), and every deletion by primary key. So a
batch costs the same with a hundred million rows stored, and needs no new index.
"""

from datetime import timedelta
from uuid import UUID

import pytest
from django.db import connection
from django.utils import timezone

from deliveries.models import DeliveryStatus
from deliveries.services.retention import PURGE_BATCH, purge_sql
from tests.deliveries.expired_rows import seed_expired
from tests.deliveries.test_statement_plans import table_reads
from tests.factories import make_endpoint, make_tenant
from webhooks_project.ids import CLOCK_SLACK, uuid7_floor

pytestmark = pytest.mark.django_db

TABLES = ("deliveries_event", "deliveries_delivery", "deliveries_deliveryattempt")


@pytest.fixture
def params() -> dict:
    """The first batch's values for a tenant with 20,000 expired events, beside
    another tenant's 20,000 events of today."""
    old, fresh = make_tenant(), make_tenant()
    seed_expired(old, [make_endpoint(tenant=old) for _ in range(2)], events=20_000)
    seed_expired(fresh, [make_endpoint(tenant=fresh)], events=20_000, days_ago=0)
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"ANALYZE {table}")
    cutoff = timezone.now() - timedelta(days=30)
    return {
        "tenant": old.pk,
        "after": UUID(int=0),
        "below": uuid7_floor(cutoff, shift=CLOCK_SLACK),
        "cutoff": cutoff,
        "batch": PURGE_BATCH,
        "succeeded": DeliveryStatus.SUCCEEDED,
        "dead_letter": DeliveryStatus.DEAD_LETTER,
        "expired": DeliveryStatus.EXPIRED,
    }


def test_purge_reads_events_through_an_index_within_the_id_range(params):
    used = table_reads(purge_sql(), params, "deliveries_event")
    assert used
    assert used <= {"event_tenant_id", "deliveries_event_pkey"}


def test_purge_reads_deliveries_by_event_and_deletes_them_by_id(params):
    used = table_reads(purge_sql(), params, "deliveries_delivery")
    assert used == {"delivery_event_endpoint", "deliveries_delivery_pkey"}


def test_purge_reads_attempts_through_the_delivery_index(params):
    used = table_reads(purge_sql(), params, "deliveries_deliveryattempt")
    assert used == {"attempt_delivery_number"}
