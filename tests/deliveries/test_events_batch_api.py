"""Batch publishing through `POST /api/v1/events/batch`: all or nothing."""

import json
import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from deliveries.flow import refusals
from deliveries.models import Delivery, Event
from tests.deliveries.test_holding import open_circuit
from tests.factories import make_endpoint
from webhooks_project import metrics

pytestmark = pytest.mark.django_db

BATCH = "/api/v1/events/batch"


def send(api, events, path=BATCH, **headers):
    return api.post(
        path, json.dumps({"events": events}), content_type="application/json", **headers
    )


def item(n: int, event_type="order.created", **fields) -> dict:
    return {"event_type": event_type, "payload": {"n": n}, **fields}


def stored(tenant) -> tuple[int, int]:
    """(events, deliveries) of the tenant."""
    return (
        Event.objects.filter(tenant=tenant).count(),
        Delivery.objects.filter(tenant=tenant).count(),
    )


def test_batch_answers_each_item_in_order_with_its_fan_out(api, tenant, other_api):
    # given: two endpoints for orders, one for users, one inactive, another tenant's
    make_endpoint(tenant=tenant, event_types=["order.*"])
    make_endpoint(tenant=tenant, event_types=["order.created", "user.deleted"])
    make_endpoint(tenant=tenant, event_types=["user.*"])
    make_endpoint(tenant=tenant, is_active=False)
    make_endpoint(tenant=other_api.tenant)
    events = [
        item(0),
        item(1, "user.deleted"),
        item(2, "invoice.paid"),
        item(3, "order.refunded", event_id="k-3"),
    ]
    # when
    response = send(api, events)
    # then
    assert response.status_code == 202, response.content
    results = response.json()["results"]
    assert [r["event_type"] for r in results] == [e["event_type"] for e in events]
    assert [r["deliveries"] for r in results] == [2, 2, 0, 1]
    assert [r["created"] for r in results] == [True] * 4
    assert set(results[0]) == {
        "id",
        "event_type",
        "consumer",
        "created_at",
        "ordering_key",
        "expires_at",
        "deliveries",
        "created",
    }
    for result, sent in zip(results, events, strict=True):
        event = Event.objects.get(pk=result["id"], tenant=tenant)
        assert event.payload == sent["payload"]
        assert event.deliveries.count() == result["deliveries"]
    assert Event.objects.get(pk=results[3]["id"]).idempotency_key == "k-3"
    assert stored(tenant) == (4, 5)
    assert int(response["RateLimit-Remaining"]) <= 2000 - 4


def test_batch_items_with_a_consumer_go_to_that_consumers_endpoints_only(api, tenant):
    # given
    a = make_endpoint(tenant=tenant, consumer="cust_a")
    b = make_endpoint(tenant=tenant, consumer="cust_b")
    shared = make_endpoint(tenant=tenant)
    # when
    response = send(
        api, [item(0, consumer="cust_a"), item(1), item(2, consumer="cust_c")]
    )
    # then
    assert response.status_code == 202, response.content
    results = response.json()["results"]
    assert [r["consumer"] for r in results] == ["cust_a", None, "cust_c"]
    assert [r["deliveries"] for r in results] == [1, 3, 0]
    reached = {
        r["id"]: set(
            Delivery.objects.filter(event_id=r["id"]).values_list(
                "endpoint_id", flat=True
            )
        )
        for r in results
    }
    assert reached[results[0]["id"]] == {a.pk}
    assert reached[results[1]["id"]] == {a.pk, b.pk, shared.pk}


@pytest.mark.parametrize("count", [0, 101])
def test_batch_of_0_or_101_items_is_400_and_stores_nothing(api, tenant, count):
    response = send(api, [item(n) for n in range(count)])
    assert response.status_code == 400
    assert list(response.json()) == ["events"]
    assert stored(tenant) == (0, 0)


@pytest.mark.parametrize(
    "body", [{}, {"events": {"0": item(0)}}, {"events": "x"}, [item(0)]]
)
def test_batch_without_a_list_of_events_is_400(api, tenant, body):
    response = api.post(BATCH, json.dumps(body), content_type="application/json")
    assert response.status_code == 400, response.content
    assert stored(tenant) == (0, 0)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"event_type": "has space", "payload": {}}, "event_type"),
        ({"event_type": "ok", "payload": [1]}, "payload"),
        ({"event_type": "ok"}, "payload"),
        ({"event_type": "ok", "payload": {}, "consumer": "no spaces"}, "consumer"),
        ({"event_type": "ok", "payload": {}, "event_id": 7}, "event_id"),
        ("not an object", "non_field_errors"),
    ],
)
def test_batch_with_an_invalid_item_is_400_naming_its_index(api, tenant, bad, field):
    # given: a valid batch but for the item at index 2
    make_endpoint(tenant=tenant)
    events = [item(0), item(1), bad, item(3)]
    # when
    response = send(api, events)
    # then: the index and field are named, and nothing of the valid ones is stored
    assert response.status_code == 400, response.content
    errors = response.json()["events"]
    assert list(errors) == ["2"]
    assert list(errors["2"]) == [field]
    assert stored(tenant) == (0, 0)


def test_batch_item_payload_keeps_the_single_event_size_limit(api, tenant, settings):
    settings.WEBHOOK_MAX_PAYLOAD_BYTES = 1024
    response = send(api, [item(0), {"event_type": "big", "payload": {"b": "x" * 1100}}])
    assert response.status_code == 400
    assert "1024 bytes" in response.json()["events"]["1"]["payload"][0]
    assert stored(tenant) == (0, 0)


def test_batch_body_over_its_limit_is_413_and_stores_nothing(api, tenant, settings):
    settings.WEBHOOK_MAX_BATCH_BYTES = 2048
    events = [item(n) | {"payload": {"blob": "x" * 300}} for n in range(8)]
    response = send(api, events)
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body exceeds 2048 bytes."}
    assert stored(tenant) == (0, 0)


def test_batch_default_limit_is_1_mib_above_a_single_events(api, tenant):
    # 200 KiB items: each within the single event's 256 KiB, together past it
    blob = "x" * (200 * 1024)
    under = [{"event_type": "big", "payload": {"blob": blob}} for _ in range(5)]
    assert send(api, under).status_code == 202
    over = [{"event_type": "big", "payload": {"blob": blob}} for _ in range(6)]
    assert send(api, over).status_code == 413
    assert stored(tenant) == (5, 0)


def test_batch_repeating_an_earlier_events_id_answers_it_and_delivers_nothing(
    api, tenant
):
    # given: an event published alone with a key
    make_endpoint(tenant=tenant)
    single = api.post(
        "/api/v1/events",
        json.dumps(item(0)),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="k-0",
    ).json()
    # when: a batch repeats it with the same body, beside a new one
    response = send(api, [item(1), item(0, event_id="k-0")])
    # then
    assert response.status_code == 202, response.content
    fresh, repeat = response.json()["results"]
    assert (fresh["created"], repeat["created"]) == (True, False)
    assert repeat["id"] == single["id"]
    assert repeat["created_at"] == single["created_at"]
    assert repeat["deliveries"] == 1
    assert stored(tenant) == (2, 2)
    # and the whole batch again creates nothing
    again = send(api, [item(1, event_id="k-1"), item(0, event_id="k-0")])
    assert [r["created"] for r in again.json()["results"]] == [True, False]
    assert send(api, [item(1, event_id="k-1")]).json()["results"][0]["created"] is False
    assert stored(tenant) == (3, 3)


def test_batch_repeating_an_earlier_items_id_answers_that_items_event(api, tenant):
    make_endpoint(tenant=tenant)
    response = send(api, [item(0, event_id="k"), item(1), item(0, event_id="k")])
    assert response.status_code == 202, response.content
    first, _, repeat = response.json()["results"]
    assert (first["created"], repeat["created"]) == (True, False)
    assert repeat["id"] == first["id"]
    assert repeat["deliveries"] == first["deliveries"] == 1
    assert stored(tenant) == (2, 2)


def test_batch_reusing_an_earlier_events_id_with_another_body_is_409(api, tenant):
    # given
    make_endpoint(tenant=tenant)
    send(api, [item(0, event_id="k-0")])
    # when: the key again with another payload, after new items
    response = send(api, [item(1), item(2, event_id="k-2"), item(9, event_id="k-0")])
    # then: nothing of the batch is stored
    assert response.status_code == 409
    assert "k-0" in response.json()["detail"]
    assert stored(tenant) == (1, 1)
    # a consumer is part of the body too
    other = send(api, [item(0, event_id="k-0", consumer="cust")])
    assert other.status_code == 409
    assert stored(tenant) == (1, 1)


def test_batch_reusing_an_items_id_with_another_body_is_409(api, tenant):
    make_endpoint(tenant=tenant)
    response = send(api, [item(0, event_id="k"), item(1), item(2, event_id="k")])
    assert response.status_code == 409
    assert "events[2]" in response.json()["detail"]
    assert stored(tenant) == (0, 0)


def test_batch_refuses_an_idempotency_key_header(api, tenant):
    response = send(api, [item(0)], HTTP_IDEMPOTENCY_KEY="k")
    assert response.status_code == 400
    assert list(response.json()) == ["Idempotency-Key"]
    assert stored(tenant) == (0, 0)


def test_batch_takes_a_token_per_item_and_a_refused_batch_takes_none(api, tenant):
    # given: 1 event/s, a burst of 2
    tenant.rate_limit = 1
    tenant.save()
    assert send(api, [item(0)]).status_code == 202  # 1 token left
    # when: two items, one token
    refused = send(api, [item(1), item(2)])
    # then: 429 with the headers, nothing stored
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert refused["RateLimit-Limit"] == "2"
    assert refused["RateLimit-Remaining"] == "1"
    assert int(refused["RateLimit-Reset"]) >= 1
    assert stored(tenant) == (1, 0)
    # and the refused batch left its token: one item still passes
    assert send(api, [item(3)]).status_code == 202
    assert send(api, [item(4)]).status_code == 429


def test_batch_larger_than_the_burst_can_never_pass_and_says_so(api, tenant):
    tenant.rate_limit = 1
    tenant.save()
    response = send(api, [item(n) for n in range(3)])
    assert response.status_code == 429
    assert "never pass" in response.json()["detail"]
    assert "burst is 2" in response.json()["detail"]
    assert stored(tenant) == (0, 0)
    assert send(api, [item(0), item(1)]).status_code == 202


def test_batch_refused_with_400_or_409_gives_its_tokens_back(api, tenant):
    # given: a burst of 2, one token spent on an event with a key
    tenant.rate_limit = 1
    tenant.save()
    assert send(api, [item(0, event_id="k")]).status_code == 202
    # when: refused batches
    assert send(api, [item(1, event_id="k")]).status_code == 409
    assert send(api, [item(1, event_type="bad type")]).status_code == 400
    # then: the last token is still there
    assert send(api, [item(2)]).status_code == 202
    assert stored(tenant) == (2, 0)


@pytest.mark.parametrize("header", [{}, {"HTTP_AUTHORIZATION": "Bearer whk_wrong"}])
def test_batch_without_a_valid_key_is_401(tenant, header):
    response = send(APIClient(), [item(0)], **header)
    assert response.status_code == 401
    assert stored(tenant) == (0, 0)


def test_batch_path_with_a_trailing_slash_works_without_redirect(api, tenant):
    response = send(api, [item(0)], path=BATCH + "/")
    assert response.status_code == 202


def test_batch_holds_a_refusing_endpoints_deliveries_unpublished(api, tenant, settings):
    # given: two endpoints, one with its circuit open
    make_endpoint(tenant=tenant)
    dead = make_endpoint(tenant=tenant)
    open_circuit(dead.pk, settings)
    refusals.forget()
    # when
    response = send(api, [item(0), item(1)])
    # then: every delivery is counted; the dead one's wait without a message
    assert [r["deliveries"] for r in response.json()["results"]] == [2, 2]
    waiting = Delivery.objects.filter(endpoint=dead)
    assert len(waiting) == 2
    assert all(d.lease_expires_at == d.next_attempt_at for d in waiting)
    assert all(d.next_attempt_at > d.created_at for d in waiting)


def test_batch_counts_the_events_it_created(
    api, tenant, django_capture_on_commit_callbacks
):
    send(api, [item(0, event_id="k")])
    before = metrics.EVENTS_INGESTED._value.get()
    with django_capture_on_commit_callbacks(execute=True):
        response = send(api, [item(0, event_id="k"), item(1), item(2)])
    assert response.status_code == 202
    assert metrics.EVENTS_INGESTED._value.get() == before + 2


def test_batch_queries_do_not_grow_with_its_items(api, tenant):
    # given: batches of 2 and of 100 items, each half repeats of earlier events
    make_endpoint(tenant=tenant)
    send(api, [item(n, event_id=f"k-{n}") for n in range(50)])

    def queries(count: int) -> int:
        events = [item(n, event_id=f"k-{n}") for n in range(count // 2)]
        events += [item(n) for n in range(count // 2)]
        with CaptureQueriesContext(connection) as captured:
            response = send(api, events)
        assert response.status_code == 202
        return len(captured)

    # then
    assert queries(100) == queries(2)


def test_batch_is_in_the_openapi_schema_with_its_bounds(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/events/batch/"]["post"]
    assert {"202", "400", "401", "409", "413", "429"} <= set(operation["responses"])
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    events = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"][
        "events"
    ]
    assert (events["minItems"], events["maxItems"]) == (1, 100)
    item_ref = events["items"]["$ref"].rsplit("/", 1)[1]
    assert {"event_type", "payload", "consumer", "event_id"} <= set(
        schema["components"]["schemas"][item_ref]["properties"]
    )


def test_batch_logs_one_record_with_its_counts(api, tenant, caplog):
    make_endpoint(tenant=tenant)
    send(api, [item(0, event_id="k")])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="deliveries"):
        send(api, [item(0, event_id="k"), item(1), item(2)])
    [record] = [r for r in caplog.records if r.msg.startswith("batch of")]
    assert record.getMessage() == (
        "batch of 3 events accepted: 2 created, 2 deliveries"
    )
    assert (record.tenant_id, record.events, record.events_created) == (
        tenant.pk,
        3,
        2,
    )


def test_batch_stores_keys_and_payloads_with_any_characters_as_sent(api, tenant):
    odd = 'a "quoted", {braced} \\ key: NULL ü 😀'
    payload = {"text": odd, "list": [1.5, None, True, {"k": "\\u0000 not a NUL"}]}
    events = [
        {"event_type": "NULL", "payload": payload, "event_id": odd},
        {"event_type": "t", "payload": {}, "event_id": "NULL", "consumer": "c:1"},
    ]
    make_endpoint(tenant=tenant, event_types=["NULL"])
    response = send(api, events)
    assert response.status_code == 202, response.content
    first, second = response.json()["results"]
    assert (first["deliveries"], second["deliveries"]) == (1, 0)
    stored_first = Event.objects.get(pk=first["id"])
    assert (stored_first.event_type, stored_first.payload) == ("NULL", payload)
    assert stored_first.idempotency_key == odd
    assert Event.objects.get(pk=second["id"]).idempotency_key == "NULL"
    assert [r["created"] for r in send(api, events).json()["results"]] == [False] * 2


@pytest.mark.parametrize("depth", range(860, 1001, 10))
def test_a_batch_payload_nested_past_any_limit_is_400_not_500(api, depth):
    # Deep enough to pass the parser yet not to be encoded again: still a 400.
    payload = "[" * depth + "]" * depth
    raw = '{"events": [{"event_type": "a", "payload": {"deep": ' + payload + "}}]}"
    response = api.post("/api/v1/events/batch", raw, content_type="application/json")
    assert response.status_code == 400, response.content[:200]
