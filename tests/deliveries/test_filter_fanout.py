"""Payload filters in the fan-out: who gets an event, in ingestion and recovery."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from deliveries.leases import queued_lease
from deliveries.models import Delivery, DeliveryStatus
from deliveries.services.endpoint_health import endpoint_deactivate
from deliveries.services.ingest import _ingest_sql, event_ingest, request_fingerprint
from deliveries.services.recovery import endpoint_recover
from deliveries.services.test_events import endpoint_send_test
from subscriptions.filters import compile_filter, evaluate
from subscriptions.matching import patterns_matching
from subscriptions.models import Endpoint
from subscriptions.selectors import endpoints_matching
from subscriptions.services import endpoint_update
from tests.factories import make_endpoint, make_tenant
from webhooks_project.ids import uuid7

pytestmark = pytest.mark.django_db

HOOK = "http://127.0.0.1:9/hook"
ORDER = {"customer": {"country": "DE"}, "total": 150, "tags": ["vip", "gift"]}


def receivers(result) -> set:
    return set(
        Delivery.objects.filter(event=result.event).values_list(
            "endpoint_id", flat=True
        )
    )


def publish(tenant, payload=ORDER, event_type="order.created", consumer=None):
    return event_ingest(
        tenant=tenant, event_type=event_type, payload=payload, consumer=consumer
    )


def test_event_reaches_only_the_endpoints_whose_filter_matches(tenant):
    # given
    passing = [
        make_endpoint(tenant=tenant),
        make_endpoint(tenant=tenant, filter={}),
        make_endpoint(tenant=tenant, filter={"customer.country": "DE"}),
        make_endpoint(tenant=tenant, filter={"total": {"$gte": 100, "$lt": 200}}),
        make_endpoint(tenant=tenant, filter={"tags": {"$in": ["vip", "x"]}}),
        make_endpoint(tenant=tenant, filter={"coupon": {"$exists": False}}),
        make_endpoint(tenant=tenant, filter={"customer.country": {"$neq": "FR"}}),
    ]
    failing = [
        make_endpoint(tenant=tenant, filter={"customer.country": "FR"}),
        make_endpoint(tenant=tenant, filter={"total": {"$gt": 150}}),
        make_endpoint(tenant=tenant, filter={"total": "150"}),
        make_endpoint(tenant=tenant, filter={"tags": {"$nin": ["gift"]}}),
        make_endpoint(tenant=tenant, filter={"coupon": {"$exists": True}}),
        make_endpoint(tenant=tenant, event_types=["invoice.*"], filter={"total": 150}),
    ]
    # when
    result = publish(tenant)
    # then
    assert receivers(result) == {endpoint.pk for endpoint in passing}
    assert result.deliveries == len(passing)
    assert receivers(result).isdisjoint(endpoint.pk for endpoint in failing)


def test_and_or_decide_together(tenant):
    # given
    either = make_endpoint(
        tenant=tenant,
        filter={"$or": [{"customer.country": "FR"}, {"total": {"$gt": 100}}]},
    )
    both = make_endpoint(
        tenant=tenant,
        filter={"$and": [{"customer.country": "DE"}, {"total": {"$gt": 100}}]},
    )
    neither = make_endpoint(
        tenant=tenant,
        filter={
            "$or": [
                {"customer.country": "FR"},
                {"$and": [{"total": {"$gt": 100}}, {"tags": "none"}]},
            ]
        },
    )
    # when
    small = publish(tenant, {"customer": {"country": "DE"}, "total": 5})
    large = publish(tenant)
    # then
    assert receivers(small) == set()
    assert receivers(large) == {either.pk, both.pk}
    assert neither.pk not in receivers(large)


def test_filter_applies_with_a_consumer_too(tenant):
    mine = make_endpoint(tenant=tenant, consumer="acme", filter={"total": 150})
    make_endpoint(tenant=tenant, consumer="acme", filter={"total": 1})
    make_endpoint(tenant=tenant, consumer="globex", filter={"total": 150})
    assert receivers(publish(tenant, consumer="acme")) == {mine.pk}


def test_other_tenants_filters_do_not_change_who_gets_the_event(tenant):
    # given: another tenant's endpoints, one whose filter would match
    other = make_tenant()
    make_endpoint(tenant=other, filter={"total": 150})
    make_endpoint(tenant=other)
    mine = make_endpoint(tenant=tenant, filter={"total": 150})
    # when
    result = publish(tenant)
    theirs = publish(other, {"total": 1})
    # then
    assert receivers(result) == {mine.pk}
    assert len(receivers(theirs)) == 1


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"total": None},
        {"total": "150"},
        {"total": [150, [151]]},
        {"total": {"$gt": 1}},
        {"customer": "DE"},
        {"customer": [{"country": "DE"}, {"country": 7}, None]},
        {"tags": [[["vip"]]]},
        {"total": 10**30, "customer": {"country": "\u00e9\U0001f600"}},
        {"total": -1.5e300},
    ],
)
def test_any_payload_fans_out_as_the_reference_says_never_an_error(tenant, payload):
    # given: filters using every operator
    filters = [
        {"total": {"$gt": 100}},
        {"total": {"$neq": 150}},
        {"total": {"$in": [150, None, "150"]}},
        {"total": {"$nin": [150]}},
        {"total": {"$lte": "z"}},
        {"customer.country": "DE"},
        {"customer.country": {"$exists": True}},
        {"tags": "vip"},
        {"$or": [{"total": None}, {"customer": {"$exists": False}}]},
    ]
    endpoints = {
        make_endpoint(tenant=tenant, filter=filter_value).pk: filter_value
        for filter_value in filters
    }
    # when
    result = publish(tenant, payload)
    # then
    expected = {pk for pk, f in endpoints.items() if evaluate(f, payload)}
    assert receivers(result) == expected


def test_changed_filter_applies_to_the_next_event(tenant):
    endpoint = make_endpoint(tenant=tenant, filter={"total": 1})
    assert receivers(publish(tenant)) == set()
    endpoint_update(endpoint=endpoint, filter={"total": 150})
    assert receivers(publish(tenant)) == {endpoint.pk}
    endpoint_update(endpoint=endpoint, filter=None)
    assert receivers(publish(tenant, {"x": 1})) == {endpoint.pk}


def test_recover_creates_only_deliveries_the_filter_matches(tenant):
    # given: events published before the endpoint existed
    since = timezone.now() - timedelta(seconds=1)
    wanted = publish(tenant).event
    publish(tenant, {"total": 1})
    publish(tenant, {})
    endpoint = make_endpoint(tenant=tenant, filter={"total": {"$gte": 100}})
    other = make_endpoint(tenant=make_tenant(), filter={"total": {"$gte": 100}})
    publish(other.tenant)
    # when
    result = endpoint_recover(endpoint=endpoint, since=since)
    # then: the one matching event of its own tenant, once
    assert result.created == 1
    assert set(
        Delivery.objects.filter(endpoint=endpoint).values_list("event_id", flat=True)
    ) == {wanted.pk}
    assert endpoint_recover(endpoint=endpoint, since=since).created == 0


def test_recover_counts_what_remains_through_the_filter(tenant):
    since = timezone.now() - timedelta(seconds=1)
    for total in (150, 1, 150, 1, 150):
        publish(tenant, {"total": total})
    endpoint = make_endpoint(tenant=tenant, filter={"total": 150})
    result = endpoint_recover(endpoint=endpoint, since=since, limit=1)
    assert (result.created, result.remaining) == (1, 2)


def test_test_event_ignores_the_filter(tenant):
    endpoint = make_endpoint(tenant=tenant, filter={"total": {"$gt": 10**9}})
    sent = endpoint_send_test(endpoint=endpoint, payload={"total": 1})
    assert sent.delivery.endpoint_id == endpoint.pk
    assert sent.delivery.status == DeliveryStatus.PENDING


def test_endpoints_matching_with_a_payload_agrees_with_the_fan_out(tenant):
    passing = make_endpoint(tenant=tenant, filter={"total": 150})
    failing = make_endpoint(tenant=tenant, filter={"total": 1})
    matching = endpoints_matching(
        tenant_id=tenant.pk, event_type="order.created", payload=ORDER
    )
    everything = endpoints_matching(tenant_id=tenant.pk, event_type="order.created")
    assert {e.pk for e in matching} == receivers(publish(tenant)) == {passing.pk}
    assert set(everything) == {passing, failing}


def test_api_publish_answers_the_filtered_fan_out_size(api, tenant):
    make_endpoint(tenant=tenant, filter={"total": 150})
    make_endpoint(tenant=tenant, filter={"total": 1})
    response = api.post(
        "/api/v1/events",
        json.dumps({"event_type": "order.created", "payload": ORDER}),
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    assert response.json()["deliveries"] == 1


def test_batch_publish_applies_the_filters(api, tenant):
    # given
    wanted = make_endpoint(tenant=tenant, filter={"total": 150})
    make_endpoint(tenant=tenant, filter={"total": 1})
    # when
    response = api.post(
        "/api/v1/events/batch",
        {
            "events": [
                {"event_type": "order.created", "payload": ORDER},
                {"event_type": "order.created", "payload": {"total": 2}},
            ]
        },
        format="json",
    )
    # then
    assert response.status_code == 202, response.content
    results = response.json()["results"]
    assert [item["deliveries"] for item in results] == [1, 0]
    assert set(
        Delivery.objects.filter(event_id=results[0]["id"]).values_list(
            "endpoint_id", flat=True
        )
    ) == {wanted.pk}


def test_platform_events_pass_through_the_filter_too(tenant):
    # given: two endpoints asking for platform events, one filtering them out
    gone = make_endpoint(tenant=tenant, url="http://127.0.0.1:9/gone")
    told = make_endpoint(
        tenant=tenant, event_types=["platform.*"], filter={"url": gone.url}
    )
    make_endpoint(
        tenant=tenant, event_types=["platform.*"], filter={"url": "http://x.test/"}
    )
    # when
    endpoint_deactivate(endpoint_id=gone.pk, reason="410 Gone")
    # then
    platform = Delivery.objects.filter(
        tenant=tenant, event__event_type="platform.endpoint.disabled"
    )
    assert set(platform.values_list("endpoint_id", flat=True)) == {told.pk}


def test_fan_out_plan_with_a_hundred_filtered_endpoints(tenant):
    # given: 100 filtered endpoints of this tenant among many tenants' endpoints
    filters = [{"customer.country": "DE", "total": {"$gt": n}} for n in range(100)]
    others = [make_tenant() for _ in range(20)]
    Endpoint.objects.bulk_create(
        [
            Endpoint(tenant=tenant, url=HOOK, filter=f, filter_path=compile_filter(f))
            for f in filters
        ]
        + [Endpoint(tenant=other, url=HOOK) for other in others for _ in range(50)]
    )
    with connection.cursor() as cursor:
        cursor.execute('ANALYZE "subscriptions_endpoint"')
    now = timezone.now()
    params = {
        "id": uuid7(),
        "tenant": tenant.pk,
        "event_type": "order.created",
        "consumer": None,
        "payload": json.dumps(ORDER),
        "key": None,
        "hash": request_fingerprint(event_type="order.created", payload=ORDER),
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
    with connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {_ingest_sql(for_consumer=False)}",
            params,
        )
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    scans = []

    def walk(node):
        if node.get("Relation Name") == "subscriptions_endpoint":
            scans.append(node)
        for child in node.get("Plans", ()):
            walk(child)

    walk(plan[0]["Plan"])
    # then: the tenant's endpoints through its index, the filter checked on
    # those rows only, and every one of the 100 passing (total 150 > 0..99)
    [scan] = scans
    assert scan["Node Type"] in ("Index Scan", "Bitmap Heap Scan")
    assert "@@" in scan["Filter"]
    assert scan["Actual Rows"] == 100
