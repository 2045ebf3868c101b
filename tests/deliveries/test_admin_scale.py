"""Admin changelists of the big tables: bounded queries, no whole-table COUNT(*).

An unfiltered list of deliveries or events takes its row count from PostgreSQL's
statistics once the table is past `EXACT_COUNT_LIMIT` (the tests set
the limit low instead of loading millions of rows, and ANALYZE the table so the
statistics exist); filters and searches go through indexes and count exactly.
"""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from deliveries.admin.filters import tenants_with_dead_letters
from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.ingest import event_ingest
from tests.factories import make_endpoint, make_event
from webhooks_project import admin_lists
from webhooks_project.admin_lists import table_row_estimate

pytestmark = pytest.mark.django_db

DELIVERY_CHANGELIST = "admin:deliveries_delivery_changelist"
EVENT_CHANGELIST = "admin:deliveries_event_changelist"
DEAD_LETTER_CHANGELIST = "admin:deliveries_deadletter_changelist"
# A changelist page: session, user, the page's rows, the count, the action
# form's content types and so on; never one query per row.
MAX_CHANGELIST_QUERIES = 10


def counts_of(queries, table: str) -> list[str]:
    """The COUNT queries over `table` among captured queries."""
    return [
        query["sql"]
        for query in queries
        if "COUNT(" in query["sql"].upper() and f'FROM "{table}"' in query["sql"]
    ]


def analyze(*tables: str) -> None:
    """Refresh PostgreSQL's statistics, as autovacuum does on a live database."""
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f'ANALYZE "{table}"')


def explain(queryset) -> str:
    """The plan of `queryset` with sequential scans and sorts discouraged.

    The tables here are tiny, so the planner would rightly read them whole; turning
    those off shows which index serves the query when the table is large.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
    return queryset.explain()


@pytest.fixture
def deliveries(tenant) -> list[Delivery]:
    """30 deliveries of `tenant`: 10 events to 3 endpoints."""
    for _ in range(3):
        make_endpoint(tenant=tenant)
    made = []
    for number in range(10):
        made += make_event(tenant=tenant, event_type=f"order.n{number}")[1]
    return made


@pytest.mark.parametrize(
    ("changelist", "table", "rows"),
    [
        (DELIVERY_CHANGELIST, "deliveries_delivery", 30),
        (EVENT_CHANGELIST, "deliveries_event", 10),
    ],
)
def test_changelist_unfiltered_big_table_is_not_counted(
    monkeypatch,
    admin_client,
    deliveries,
    settings,
    django_assert_max_num_queries,
    changelist,
    table,
    rows,
):
    # given: the table counts as big, and has statistics
    monkeypatch.setattr(admin_lists, "EXACT_COUNT_LIMIT", 1)
    analyze(table)
    # when
    with (
        django_assert_max_num_queries(MAX_CHANGELIST_QUERIES),
        CaptureQueriesContext(connection) as captured,
    ):
        response = admin_client.get(reverse(changelist))
    # then
    assert response.status_code == 200
    assert counts_of(captured.captured_queries, table) == []
    cl = response.context["cl"]
    assert cl.result_count == rows  # the estimate, exact right after ANALYZE
    assert len(cl.result_list) == rows


def test_changelist_unfiltered_small_table_counts_exactly(admin_client, deliveries):
    # Below the limit (the default 100,000) a COUNT is cheap and always right.
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(reverse(DELIVERY_CHANGELIST))
    assert response.context["cl"].result_count == 30
    assert len(counts_of(captured.captured_queries, "deliveries_delivery")) == 1


def test_table_row_estimate_is_unknown_until_analyzed():
    # Before its first ANALYZE (reltuples = -1) a table's size is unknown, and the
    # paginator counts exactly instead.
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE never_analyzed (id int)")
        cursor.execute("INSERT INTO never_analyzed SELECT generate_series(1, 500)")
    assert table_row_estimate("never_analyzed") is None
    analyze("never_analyzed")
    assert table_row_estimate("never_analyzed") == 500


def test_changelist_query_count_does_not_grow_with_rows(
    monkeypatch, admin_client, tenant, settings
):
    # given: one row, then 30
    monkeypatch.setattr(admin_lists, "EXACT_COUNT_LIMIT", 1)
    make_endpoint(tenant=tenant)
    make_event(tenant=tenant)
    analyze("deliveries_delivery")
    with CaptureQueriesContext(connection) as one_row:
        admin_client.get(reverse(DELIVERY_CHANGELIST))
    for _ in range(29):
        make_event(tenant=tenant)
    analyze("deliveries_delivery")
    # when
    with CaptureQueriesContext(connection) as many_rows:
        response = admin_client.get(reverse(DELIVERY_CHANGELIST))
    # then: the event and endpoint columns come joined, not one query per row
    assert len(response.context["cl"].result_list) == 30
    assert len(many_rows.captured_queries) == len(one_row.captured_queries)


def test_changelist_status_filter_counts_exactly_through_an_index(
    monkeypatch, admin_client, deliveries, settings, django_assert_max_num_queries
):
    # given
    monkeypatch.setattr(admin_lists, "EXACT_COUNT_LIMIT", 1)
    Delivery.objects.filter(pk__in=[d.pk for d in deliveries[:4]]).update(
        status=DeliveryStatus.FAILED
    )
    analyze("deliveries_delivery")
    # when
    with (
        django_assert_max_num_queries(MAX_CHANGELIST_QUERIES),
        CaptureQueriesContext(connection) as captured,
    ):
        response = admin_client.get(
            reverse(DELIVERY_CHANGELIST), {"status__exact": "failed"}
        )
    # then: an exact count, narrowed by the filter
    cl = response.context["cl"]
    assert cl.result_count == 4
    [count] = counts_of(captured.captured_queries, "deliveries_delivery")
    assert "WHERE" in count and '"status" = ' in count
    # and the page query, newest first, reads the (status, -id) index
    assert "delivery_status_id" in explain(cl.result_list)


def test_changelist_facets_are_never_counted(admin_client, deliveries):
    # given: Django's "Show counts" switch, which counts every filter choice
    with CaptureQueriesContext(connection) as plain:
        admin_client.get(reverse(DELIVERY_CHANGELIST))
    # when
    with CaptureQueriesContext(connection) as faceted:
        response = admin_client.get(reverse(DELIVERY_CHANGELIST), {"_facets": "1"})
    # then
    assert response.status_code == 200
    assert len(faceted.captured_queries) == len(plain.captured_queries)
    assert "Show counts" not in response.content.decode()


def test_changelist_sorts_only_by_indexed_columns(admin_client, deliveries):
    response = admin_client.get(reverse(DELIVERY_CHANGELIST))
    cl = response.context["cl"]
    assert cl.sortable_by == ("id",)
    # A forged sort on another column is ignored: the order stays the primary key's.
    column = cl.list_display.index("updated_at")
    forged = admin_client.get(reverse(DELIVERY_CHANGELIST), {"o": str(column)})
    assert forged.status_code == 200
    assert forged.context["cl"].result_list.query.order_by == ("-pk",)


def test_event_changelist_searches_event_type_exactly_through_an_index(
    admin_client, deliveries
):
    # when
    with CaptureQueriesContext(connection) as captured:
        exact = admin_client.get(reverse(EVENT_CHANGELIST), {"q": "order.n3"})
    part = admin_client.get(reverse(EVENT_CHANGELIST), {"q": "n3"})
    # then: an equality (indexed), never a LIKE over every event
    cl = exact.context["cl"]
    assert [event.event_type for event in cl.result_list] == ["order.n3"]
    assert list(part.context["cl"].result_list) == []
    page_sql = " ".join(q["sql"] for q in captured.captured_queries)
    assert "LIKE" not in page_sql.upper()
    analyze("deliveries_event")
    assert "event_type_id" in explain(cl.result_list)


def test_dead_letter_changelist_reads_the_dead_letter_index(admin_client, deliveries):
    # given
    Delivery.objects.filter(pk__in=[d.pk for d in deliveries[:5]]).update(
        status=DeliveryStatus.DEAD_LETTER, dead_lettered_at=timezone.now()
    )
    analyze("deliveries_delivery")
    # when
    response = admin_client.get(reverse(DEAD_LETTER_CHANGELIST))
    # then
    cl = response.context["cl"]
    assert cl.result_count == 5
    assert re.search(r"delivery_dead_lettered_at", explain(cl.result_list))


def test_dead_letter_filters_never_read_the_whole_queue(
    admin_client, deliveries, django_assert_max_num_queries
):
    # given: dead letters of one tenant (the fixture's), with their reason
    Delivery.objects.filter(pk__in=[d.pk for d in deliveries[:6]]).update(
        status=DeliveryStatus.DEAD_LETTER,
        dead_lettered_at=timezone.now(),
        dead_letter_reason="retries exhausted",
    )
    analyze("deliveries_delivery")
    chosen = deliveries[0]
    query = {
        "tenant__id__exact": str(chosen.tenant_id),
        "endpoint__id__exact": str(chosen.endpoint_id),
        "reason": "retries",
        "age": "1d",
    }
    # when: every filter chosen, so every one lists its choices and applies
    with (
        django_assert_max_num_queries(MAX_CHANGELIST_QUERIES),
        CaptureQueriesContext(connection) as captured,
    ):
        response = admin_client.get(reverse(DEAD_LETTER_CHANGELIST), query)
    # then: no DISTINCT over the queue for the choices
    assert response.status_code == 200
    assert {spec.title for spec in response.context["cl"].filter_specs} == {
        "tenant",
        "endpoint",
        "reason",
        "age",
    }
    sql = " ".join(q["sql"] for q in captured.captured_queries).upper()
    assert "DISTINCT" not in sql
    # the tenants are probed on the dead-letter index, one tenant at a time
    assert "delivery_dead_letter" in explain(tenants_with_dead_letters())
    # reason and age narrow the queue through the dead-letter date's index
    unscoped = admin_client.get(
        reverse(DEAD_LETTER_CHANGELIST), {"reason": "retries", "age": "1d"}
    )
    assert unscoped.context["cl"].result_count == 6
    assert "delivery_dead_lettered_at" in explain(unscoped.context["cl"].result_list)


def test_event_changelist_filters_a_typed_consumer_through_an_index(
    admin_client, tenant, django_assert_max_num_queries
):
    # given: events of two consumers and without one
    for consumer in ("acme", "acme", "globex", None):
        event_ingest(
            tenant=tenant, event_type="order.created", payload={}, consumer=consumer
        )
    analyze("deliveries_event")
    # when
    with (
        django_assert_max_num_queries(MAX_CHANGELIST_QUERIES),
        CaptureQueriesContext(connection) as captured,
    ):
        response = admin_client.get(reverse(EVENT_CHANGELIST), {"consumer": "acme"})
    # then: a box, never the list of every consumer (DISTINCT over the events)
    assert response.status_code == 200
    cl = response.context["cl"]
    assert [event.consumer for event in cl.result_list] == ["acme", "acme"]
    assert cl.result_count == 2
    sql = " ".join(q["sql"] for q in captured.captured_queries).upper()
    assert "DISTINCT" not in sql
    assert "event_consumer_id" in explain(cl.result_list)
