"""The hot statements keyed by delivery id find their rows through the primary key.

With statistics that say few deliveries are in progress or pending (true of a
live table), PostgreSQL would rather answer the status part of those statements
from a status index or the partial index of open deliveries. Those indexes hold
an entry for every row version not vacuumed yet, so such a plan slows down with
every delivery between two vacuums (rawsql.not_by_index). Each plan here is the
one PostgreSQL picks for the statement's actual values, on a table of 50,000
succeeded deliveries with fresh statistics.
"""

import json
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus
from deliveries.services import ordering
from deliveries.services.claim import _SQL as CLAIM_SQL
from deliveries.services.postponing import (
    _postpone_refusing_sql,
    _postpone_unclaimed_sql,
)
from deliveries.services.recording import _successes_sql
from tests.factories import make_endpoint
from webhooks_project.rawsql import timestamptz_array, uuid_array

pytestmark = pytest.mark.django_db

ROWS = 50_000
PRIMARY_KEY = "deliveries_delivery_pkey"


@pytest.fixture
def open_ids(tenant) -> list[str]:
    """Ids of a few open deliveries among many succeeded ones, analyzed."""
    endpoint = make_endpoint(tenant=tenant)
    events, deliveries = '"deliveries_event"', '"deliveries_delivery"'
    with connection.cursor() as cursor:
        # Without triggers, so no foreign-key check is queued (the rows are valid
        # by construction): Django checks deferred constraints at teardown (SET
        # CONSTRAINTS ALL IMMEDIATE), and late in a full run that took minutes.
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            f"""
            WITH ev AS (
                INSERT INTO {events} (id, tenant_id, event_type, payload,
                    idempotency_key, request_hash, created_at)
                SELECT gen_random_uuid(), %(tenant)s, 'order.created', '{{}}',
                       NULL, '', now()
                FROM generate_series(1, %(rows)s)
                RETURNING id, created_at
            )
            INSERT INTO {deliveries} (id, tenant_id, event_id, endpoint_id, status,
                attempt_count, round_start, next_attempt_at, lease_expires_at,
                last_status_code, last_error, dead_letter_reason, succeeded_at,
                dead_lettered_at, created_at, updated_at)
            SELECT gen_random_uuid(), %(tenant)s, ev.id, %(endpoint)s,
                   CASE WHEN row_number() OVER () <= 10 THEN %(pending)s
                        WHEN row_number() OVER () <= 20 THEN %(in_progress)s
                        ELSE %(succeeded)s END,
                   1, 0, NULL, NULL, 200, '', '', NULL, NULL,
                   ev.created_at, ev.created_at
            FROM ev
            """,
            {
                "tenant": tenant.pk,
                "endpoint": endpoint.pk,
                "rows": ROWS,
                "pending": DeliveryStatus.PENDING,
                "in_progress": DeliveryStatus.IN_PROGRESS,
                "succeeded": DeliveryStatus.SUCCEEDED,
            },
        )
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
        cursor.execute(f"ANALYZE {deliveries}")
    return [
        str(pk)
        for pk in Delivery.objects.exclude(status=DeliveryStatus.SUCCEEDED)
        .order_by("pk")
        .values_list("pk", flat=True)
    ]


def delivery_indexes(sql: str, params: dict) -> set[str]:
    """How the plan of `sql` (with these values) reads deliveries: index names,
    or "Seq Scan"."""
    return table_reads(sql, params, "deliveries_delivery")


def table_reads(sql: str, params: dict, table: str) -> set[str]:
    """How the plan of `sql` (with these values) reads `table`: index names, or
    "Seq Scan". A partitioned table's partitions count as the table (but for
    empty ones: their scan reads nothing), their indexes under the name of the
    table's index they belong to."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relid::regclass::text FROM pg_partition_tree(%s::regclass) "
            "WHERE pg_relation_size(relid) > 0",
            [table],
        )
        relations = {name for (name,) in cursor.fetchall()} | {table}
        cursor.execute(
            """
            SELECT c.relname, coalesce(pg_partition_root(c.oid)::regclass::text,
                                       c.relname)
            FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
            WHERE i.indrelid IN (SELECT relid FROM pg_partition_tree(%s::regclass))
               OR i.indrelid = %s::regclass
            """,
            [table, table],
        )
        indexes = dict(cursor.fetchall())
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    found: set[str] = set()

    def walk(node: dict) -> None:
        if node.get("Index Name") in indexes:
            found.add(indexes[node["Index Name"]])
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in relations:
            found.add("Seq Scan")
        for child in node.get("Plans", ()):
            walk(child)

    walk(plan[0]["Plan"])
    return found


LINE_INDEXES = ("delivery_open_line", "delivery_line_in_progress")


def test_claim_looks_deliveries_up_by_primary_key(open_ids):
    now = timezone.now()
    # A whole batch, as the engine claims them: 200 ids (most unknown here).
    batch = open_ids + [str(uuid.uuid4()) for _ in range(200 - len(open_ids))]
    params = {
        "ids": uuid_array(batch),
        "now": now,
        "due": now,
        "lease": now + timedelta(seconds=60),
        "pending": DeliveryStatus.PENDING,
        "failed": DeliveryStatus.FAILED,
        "in_progress": DeliveryStatus.IN_PROGRESS,
    }
    # The ids by primary key; what is ahead of a keyed one by its line's
    # indexes (open ones in sequence, the one in progress).
    assert delivery_indexes(CLAIM_SQL, params) == {PRIMARY_KEY, *LINE_INDEXES}


def test_line_release_reads_lines_by_their_index(open_ids):
    now = timezone.now()
    endpoints = [str(uuid.uuid4()) for _ in range(50)]
    params = {
        "ids": uuid_array([]),
        "endpoints": uuid_array(endpoints),
        "keys": [f"key-{n}" for n in range(50)],
        "now": now,
        "lease": now + timedelta(seconds=60),
    }
    assert delivery_indexes(ordering._LINES_RELEASE_SQL, params) <= {
        PRIMARY_KEY,
        *LINE_INDEXES,
    }
    params["ids"] = uuid_array(open_ids)
    assert delivery_indexes(ordering._PARKED_RELEASE_SQL, params) == {
        PRIMARY_KEY,
        *LINE_INDEXES,
    }


def test_success_record_looks_deliveries_up_by_primary_key(open_ids):
    rows = [
        {
            "delivery_id": delivery_id,
            "response_status": 200,
            "error": "",
            "started_at": timezone.now().isoformat(),
            "duration_ms": 3,
            "outcome": "success",
            "request_headers": {},
            "response_headers": {},
            "response_body": "",
        }
        for delivery_id in open_ids[10:]
    ]
    params = {
        "rows": json.dumps(rows),
        "succeeded": DeliveryStatus.SUCCEEDED,
        "in_progress": DeliveryStatus.IN_PROGRESS,
        "now": timezone.now(),
    }
    assert delivery_indexes(_successes_sql(), params) == {PRIMARY_KEY}


def test_put_off_looks_deliveries_up_by_primary_key(open_ids):
    params = {
        "ids": uuid_array(open_ids[:10]),
        "due": timezone.now() + timedelta(seconds=15),
        "now": timezone.now(),
        "pending": DeliveryStatus.PENDING,
        "failed": DeliveryStatus.FAILED,
    }
    assert delivery_indexes(_postpone_unclaimed_sql(), params) == {PRIMARY_KEY}


def test_hold_finds_due_rows_through_the_open_lease_index(open_ids):
    # given: the endpoint of 50,000 deliveries, 20 of them open
    endpoint = Delivery.objects.get(pk=open_ids[0]).endpoint_id
    now = timezone.now()
    # when: the sweep holds that endpoint's due rows
    used = delivery_indexes(
        _postpone_refusing_sql(),
        {
            "endpoints": uuid_array([endpoint]),
            "until": timestamptz_array([now + timedelta(seconds=60)]),
            "keep": uuid_array([open_ids[1]]),
            "now": now,
            "pending": DeliveryStatus.PENDING,
            "in_progress": DeliveryStatus.IN_PROGRESS,
            "failed": DeliveryStatus.FAILED,
        },
    )
    # then: not through every delivery the endpoint ever had
    assert "delivery_open_lease" in used
    assert "Seq Scan" not in used
    assert "delivery_endpoint_id" not in used
