"""The statements of consumers, recovery and stats read through indexes.

Each plan is the one PostgreSQL picks for the statement's actual values, on
tables with fresh statistics and a realistic shape: a tenant with thousands of
endpoints of many consumers, and a month of events and deliveries whose UUIDv7
ids follow their creation times, as production's do.
"""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from deliveries.leases import queued_lease
from deliveries.models import AttemptOutcome, DeliveryStatus
from deliveries.services.ingest import _ingest_sql, request_fingerprint
from deliveries.services.recovery import recover_sql
from deliveries.stats import stats_sql
from subscriptions.matching import (
    RESERVED_PREFIX,
    filters_as_sql,
    patterns_matching,
)
from subscriptions.models import Endpoint
from tests.deliveries.test_statement_plans import table_reads
from tests.factories import make_endpoint, make_tenant
from webhooks_project.ids import CLOCK_SLACK, UUID7_SQL, uuid7, uuid7_floor

pytestmark = pytest.mark.django_db

ENDPOINTS = 5_000
CONSUMERS = 1_000
EVENTS = 50_000


def uuid7_of(column: str) -> str:
    """SQL of a UUIDv7 made for the time in `column` rather than now."""
    return UUID7_SQL.replace("clock_timestamp()", column)


@pytest.fixture
def month(tenant):
    """An endpoint with a month of events and one delivery of each, analyzed;
    another tenant's month of events beside them."""
    endpoint = make_endpoint(tenant=tenant)
    other = make_tenant()
    with connection.cursor() as cursor:
        for owner, rows in ((tenant, EVENTS), (other, EVENTS // 5)):
            cursor.execute(
                f"""
                WITH ev AS (
                    INSERT INTO "deliveries_event" (id, tenant_id, event_type,
                        consumer, payload, idempotency_key, request_hash,
                        created_at)
                    SELECT {uuid7_of("s.ts")}, %(tenant)s,
                           'order.n' || (random() * 20)::int, NULL, '{{}}', NULL,
                           '', s.ts
                    FROM (SELECT now() - random() * interval '30 days' AS ts
                          FROM generate_series(1, %(rows)s)) AS s
                    RETURNING id, created_at
                )
                INSERT INTO "deliveries_delivery" (id, tenant_id, event_id,
                    endpoint_id, status, attempt_count, round_start,
                    next_attempt_at, lease_expires_at, last_status_code,
                    last_error, dead_letter_reason, succeeded_at,
                    dead_lettered_at, created_at, updated_at)
                SELECT {uuid7_of("ev.created_at")}, %(tenant)s, ev.id,
                       %(endpoint)s, %(succeeded)s, 1, 0, NULL, NULL, 200, '', '',
                       ev.created_at, NULL, ev.created_at, ev.created_at
                FROM ev WHERE %(deliver)s
                """,
                {
                    "tenant": owner.pk,
                    "rows": rows,
                    "endpoint": endpoint.pk,
                    "succeeded": DeliveryStatus.SUCCEEDED,
                    "deliver": owner == tenant,
                },
            )
        cursor.execute('ANALYZE "deliveries_event"')
        cursor.execute('ANALYZE "deliveries_delivery"')
    return endpoint


def test_fan_out_to_one_consumer_reads_its_endpoints_through_the_index(tenant):
    # given: thousands of endpoints of a thousand consumers, analyzed
    Endpoint.objects.bulk_create(
        Endpoint(
            tenant=tenant,
            url="http://127.0.0.1:9/",
            consumer=f"consumer-{number % CONSUMERS}",
        )
        for number in range(ENDPOINTS)
    )
    with connection.cursor() as cursor:
        cursor.execute('ANALYZE "subscriptions_endpoint"')
    now = timezone.now()
    params = {
        "id": uuid7(),
        "tenant": tenant.pk,
        "event_type": "order.created",
        "consumer": "consumer-7",
        "payload": json.dumps({}),
        "key": None,
        "hash": request_fingerprint(event_type="order.created", payload={}),
        "expires_at": None,
        "ordering_key": None,
        "now": now,
        "lease": queued_lease(now),
        "pending": DeliveryStatus.PENDING,
        "patterns": patterns_matching("order.created"),
        "held": "{}",
        "until": "{}",
    }
    # when
    used = table_reads(_ingest_sql(for_consumer=True), params, "subscriptions_endpoint")
    # then: that consumer's few endpoints, not all the tenant's
    assert "endpoint_tenant_consumer" in used
    assert used.isdisjoint({"Seq Scan", "endpoint_tenant_active"})


def test_recover_reads_the_windows_events_through_an_index(month):
    # given: the last hour of a month
    now = timezone.now()
    since = now - timedelta(hours=1)
    exacts, prefixes = filters_as_sql(["order.*"])
    params = {
        "tenant": month.tenant_id,
        "endpoint": month.pk,
        "consumer": None,
        "since": since,
        "until": now,
        "low": uuid7_floor(since, shift=-CLOCK_SLACK),
        "high": uuid7_floor(now, shift=CLOCK_SLACK),
        "all_types": False,
        "exacts": exacts,
        "prefixes": prefixes,
        "reserved": RESERVED_PREFIX,
        "batch": 1000,
        "due": now,
        "lease": queued_lease(now),
        "pending": DeliveryStatus.PENDING,
        "now": now,
    }
    # when
    events = table_reads(recover_sql(), params, "deliveries_event")
    deliveries = table_reads(recover_sql(), params, "deliveries_delivery")
    # then: an index range of the window, and each event's delivery looked up
    assert "Seq Scan" not in events
    assert events & {"event_tenant_id", "event_tenant_type_id", "deliveries_event_pkey"}
    assert deliveries == {"delivery_event_endpoint"}


def test_stats_read_the_windows_deliveries_through_the_endpoint_index(month):
    # given: the last day of a month
    until = timezone.now()
    since = until - timedelta(hours=24)
    params = {
        "endpoint": month.pk,
        "since": since,
        "until": until,
        "low": uuid7_floor(since, shift=-CLOCK_SLACK),
        "high": uuid7_floor(until, shift=CLOCK_SLACK),
        "cap": 100_000,
        "success": AttemptOutcome.SUCCESS,
        "step": "hour",
    }
    # when
    used = table_reads(stats_sql(), params, "deliveries_delivery")
    # then: the (endpoint, -id) range of the day, never a scan of the month.
    # The probe for rows below the oldest one read (it runs only when capped)
    # may take the primary key's id range instead: it starts at the window's
    # floor, and here one endpoint holds most of the table.
    assert "delivery_endpoint_id" in used
    assert used <= {"delivery_endpoint_id", "deliveries_delivery_pkey"}
