"""The dead-letter summaries read the minutes they summarise, not the whole queue.

Each plan is the one PostgreSQL picks for the statement's actual values, on a
dead-letter queue of 50,000 rows spread over a month, with fresh statistics.
"""

import pytest
from django.db import connection
from django.utils import timezone

from deliveries.models import DeliveryStatus
from deliveries.services.dead_letter_events import (
    LOOKBACK_WINDOWS,
    WINDOW,
    _summaries_params,
    _summaries_sql,
    window_start,
)
from tests.deliveries.test_statement_plans import table_reads
from tests.factories import make_endpoint

pytestmark = pytest.mark.django_db

ROWS = 50_000


@pytest.fixture
def dead_letter_queue(tenant):
    """A month of dead letters of one endpoint; a platform subscriber; analyzed."""
    failing = make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant, event_types=["platform.*"])
    events, deliveries = '"deliveries_event"', '"deliveries_delivery"'
    with connection.cursor() as cursor:
        # As test_statement_plans does: no foreign-key checks queued for teardown.
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            f"""
            WITH ev AS (
                INSERT INTO {events} (id, tenant_id, event_type, payload,
                    idempotency_key, request_hash, created_at)
                SELECT gen_random_uuid(), %(tenant)s, 'order.created', '{{}}',
                       NULL, '', now() - n * interval '50 seconds'
                FROM generate_series(1, %(rows)s) AS n
                RETURNING id, created_at
            )
            INSERT INTO {deliveries} (id, tenant_id, event_id, endpoint_id, status,
                attempt_count, round_start, next_attempt_at, lease_expires_at,
                last_status_code, last_error, dead_letter_reason, succeeded_at,
                dead_lettered_at, created_at, updated_at)
            SELECT gen_random_uuid(), %(tenant)s, ev.id, %(endpoint)s, %(dead)s,
                   8, 0, NULL, NULL, 500, '', 'retries exhausted', NULL,
                   ev.created_at, ev.created_at, ev.created_at
            FROM ev
            """,
            {
                "tenant": tenant.pk,
                "endpoint": failing.pk,
                "rows": ROWS,
                "dead": DeliveryStatus.DEAD_LETTER,
            },
        )
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
        cursor.execute(f"ANALYZE {deliveries}")
        cursor.execute(f"ANALYZE {events}")


def test_summaries_read_the_look_back_through_the_dead_letter_index(
    dead_letter_queue,
):
    until = window_start(timezone.now())
    params = _summaries_params(since=until - WINDOW * LOOKBACK_WINDOWS, until=until)
    used = table_reads(_summaries_sql(), params, "deliveries_delivery")
    # one of the two partial indexes of dead letters by dead_lettered_at (per
    # tenant, or across tenants), whichever the statistics favour: a range
    assert used and used <= {"delivery_dead_letter", "delivery_dead_lettered_at"}
    # and the events of those dead letters by their primary key
    assert table_reads(_summaries_sql(), params, "deliveries_event") == {
        "deliveries_event_pkey"
    }
