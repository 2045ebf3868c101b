"""Ingestion through `POST /api/v1/events`: validation, fan-out, idempotency, limits."""

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from deliveries.models import Delivery, DeliveryStatus, Event
from tests.factories import make_endpoint

pytestmark = pytest.mark.django_db


def publish(api, body, **headers):
    return api.post(
        "/api/v1/events", json.dumps(body), content_type="application/json", **headers
    )


ORDER = {"event_type": "order.created", "payload": {"order_id": 42}}


def test_event_fans_out_to_exactly_matching_endpoints_of_own_tenant(
    api, tenant, other_api
):
    # given
    wanted = [
        make_endpoint(tenant=tenant),
        make_endpoint(tenant=tenant, event_types=["*"]),
        make_endpoint(tenant=tenant, event_types=["order.*"]),
        make_endpoint(tenant=tenant, event_types=["order.created", "user.deleted"]),
    ]
    make_endpoint(tenant=tenant, event_types=["order.updated"])
    make_endpoint(tenant=tenant, event_types=["user.*"])
    make_endpoint(tenant=tenant, is_active=False)
    make_endpoint(tenant=other_api.tenant)
    # when
    response = publish(api, ORDER)
    # then
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {
        "id",
        "event_type",
        "consumer",
        "created_at",
        "ordering_key",
        "expires_at",
        "deliveries",
    }
    assert body["consumer"] is None
    assert body["deliveries"] == 4
    deliveries = Delivery.objects.filter(event_id=body["id"])
    assert {d.endpoint_id for d in deliveries} == {e.pk for e in wanted}
    assert {d.status for d in deliveries} == {DeliveryStatus.PENDING}


def test_event_idempotent_repeat_returns_original_and_creates_nothing(api, tenant):
    make_endpoint(tenant=tenant)
    first = publish(api, ORDER, HTTP_IDEMPOTENCY_KEY="k-1")
    again = publish(api, ORDER, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == first.json()
    assert Event.objects.filter(tenant=tenant).count() == 1
    assert Delivery.objects.filter(tenant=tenant).count() == 1


def test_event_id_field_is_the_idempotency_key(api, tenant):
    first = publish(api, {**ORDER, "event_id": "evt-7"})
    again = publish(api, ORDER, HTTP_IDEMPOTENCY_KEY="evt-7")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_event_idempotency_key_reused_with_other_body_is_409(api, tenant):
    publish(api, ORDER, HTTP_IDEMPOTENCY_KEY="k-2")
    response = publish(
        api, {**ORDER, "payload": {"order_id": 43}}, HTTP_IDEMPOTENCY_KEY="k-2"
    )
    assert response.status_code == 409
    assert "detail" in response.json()
    assert Event.objects.filter(tenant=tenant).count() == 1


def test_event_idempotency_keys_are_per_tenant(api, other_api):
    a = publish(api, ORDER, HTTP_IDEMPOTENCY_KEY="shared")
    b = publish(other_api, ORDER, HTTP_IDEMPOTENCY_KEY="shared")
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


@pytest.mark.parametrize(
    "body",
    [
        {"payload": {}},
        {"event_type": "order.created"},
        {"event_type": "", "payload": {}},
        {"event_type": "has space", "payload": {}},
        {"event_type": "order.created\n", "payload": {}},
        {"event_type": "x" * 256, "payload": {}},
        {"event_type": "ok", "payload": [1, 2]},
        {"event_type": "ok", "payload": "text"},
        {"event_type": 5, "payload": {}},
        [1, 2, 3],
    ],
)
def test_event_invalid_body_is_400(api, body):
    response = publish(api, body)
    assert response.status_code == 400, response.content


def test_event_malformed_json_is_400(api):
    for raw in ('{"event_type": "a", ', "NaN", '{"event_type": "a", "payload": NaN}'):
        response = api.post("/api/v1/events", raw, content_type="application/json")
        assert response.status_code == 400
        assert "detail" in response.json()


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1.5e999"])
def test_a_number_beyond_a_float_is_400_not_500(api, tenant, number):
    # Python reads these as infinities, which no JSON column (nor body) holds.
    raw = f'{{"event_type": "a", "payload": {{"n": {number}}}}}'
    response = api.post("/api/v1/events", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert "out of range" in response.json()["detail"]
    assert not Event.objects.filter(tenant=tenant).exists()


def test_event_oversized_body_is_413_and_stores_nothing(api, tenant, settings):
    settings.WEBHOOK_MAX_PAYLOAD_BYTES = 1024
    body = {"event_type": "big", "payload": {"blob": "x" * 2000}}
    response = publish(api, body)
    assert response.status_code == 413
    assert Event.objects.filter(tenant=tenant).count() == 0


def test_event_default_size_limit_is_256_kib(api, tenant):
    near = {"event_type": "big", "payload": {"blob": "x" * (256 * 1024 - 100)}}
    over = {"event_type": "big", "payload": {"blob": "x" * (256 * 1024 + 1)}}
    assert publish(api, near).status_code == 202
    assert publish(api, over).status_code == 413


def test_event_over_tenant_rate_limit_is_429_with_headers(api, tenant):
    tenant.rate_limit = 1  # burst of 2
    tenant.save()
    statuses = [publish(api, ORDER).status_code for _ in range(3)]
    assert statuses == [202, 202, 429]
    limited = publish(api, ORDER)
    assert limited.status_code == 429
    assert int(limited["Retry-After"]) >= 1
    assert limited["RateLimit-Limit"] == "2"
    assert limited["RateLimit-Remaining"] == "0"
    assert int(limited["RateLimit-Reset"]) >= 1


def test_event_accepted_carries_rate_limit_headers(api):
    response = publish(api, ORDER)
    assert response.status_code == 202
    assert int(response["RateLimit-Limit"]) == 2000
    assert int(response["RateLimit-Remaining"]) >= 1


def test_event_list_filters_and_cursor_pagination(api, tenant):
    for index in range(5):
        publish(api, {"event_type": f"t.{index % 2}", "payload": {"i": index}})
    page = api.get("/api/v1/events?limit=2").json()
    assert len(page["results"]) == 2
    assert page["next"]
    rest = api.get(page["next"]).json()
    assert {e["id"] for e in page["results"]}.isdisjoint(
        {e["id"] for e in rest["results"]}
    )
    only = api.get("/api/v1/events?event_type=t.1").json()["results"]
    assert len(only) == 2
    assert api.get("/api/v1/events?created_after=nonsense").status_code == 400


def test_event_list_created_after_and_before_bound_the_range(api, tenant):
    # given: three events a day apart
    ids = [
        publish(api, {"event_type": "t", "payload": {"i": i}}).json()["id"]
        for i in range(3)
    ]
    now = timezone.now()
    for days, event_id in zip((2, 1, 0), ids, strict=True):
        Event.objects.filter(pk=event_id).update(created_at=now - timedelta(days=days))

    def listed(**bounds):
        query = {
            k: (now - v).isoformat().replace("+00:00", "Z") for k, v in bounds.items()
        }
        response = api.get("/api/v1/events", query)
        assert response.status_code == 200, response.content
        return {event["id"] for event in response.json()["results"]}

    hours = timedelta(hours=12)
    # then: each bound excludes what lies beyond it, together they select the middle
    assert listed(created_after=timedelta(days=1) + hours) == set(ids[1:])
    assert listed(created_before=hours) == set(ids[:2])
    assert listed(created_after=timedelta(days=1) + hours, created_before=hours) == {
        ids[1]
    }
    assert api.get("/api/v1/events?created_before=nonsense").status_code == 400


def test_event_detail_summarises_deliveries(api, tenant):
    make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant)
    event_id = publish(api, ORDER).json()["id"]
    detail = api.get(f"/api/v1/events/{event_id}").json()
    assert detail["payload"] == ORDER["payload"]
    assert detail["deliveries"] == 2
    assert detail["delivery_statuses"]["pending"] == 2


def test_event_payload_nested_past_json_encoder_limits_is_400_not_500(api, tenant):
    # Regression: ~900 levels parsed, then json.dumps hit RecursionError (500).
    raw = '{"event_type": "deep", "payload": ' + '{"a":' * 900 + "1" + "}" * 901
    response = api.post("/api/v1/events", raw, content_type="application/json")
    assert response.status_code == 400
    assert not Event.objects.filter(tenant=tenant).exists()


@pytest.mark.parametrize(
    "payload", [r'{"a": "x\u0000y"}', r'{"a\u0000": 1}', r'{"a": [[{"b": "\u0000"}]]}']
)
def test_event_payload_with_nul_is_400_not_500(api, tenant, payload):
    # Regression: PostgreSQL's jsonb cannot hold \u0000 (DataError, 500).
    raw = '{"event_type": "t", "payload": ' + payload + "}"
    response = api.post("/api/v1/events", raw, content_type="application/json")
    assert response.status_code == 400
    assert "NUL" in response.json()["payload"][0]
    assert not Event.objects.filter(tenant=tenant).exists()


@pytest.mark.parametrize("payload", [r'{"a": "\ud800"}', r'{"\udc00x": 1}'])
def test_event_payload_with_lone_surrogate_is_400_not_500(api, tenant, payload):
    # Regression: valid JSON syntax, but not encodable as UTF-8 (500).
    raw = '{"event_type": "t", "payload": ' + payload + "}"
    response = api.post("/api/v1/events", raw, content_type="application/json")
    assert response.status_code == 400
    assert "surrogate" in response.json()["detail"]
    paired = r'{"emoji": "\ud83d\ude00"}'
    raw = '{"event_type": "t", "payload": ' + paired + "}"
    accepted = api.post("/api/v1/events", raw, content_type="application/json")
    assert accepted.status_code == 202
    assert Event.objects.get(tenant=tenant).payload == {"emoji": "\U0001f600"}


def test_event_idempotency_key_with_nul_is_400_not_500(api, tenant):
    # Regression: a NUL in the header reached a text column (DataError, 500).
    response = publish(api, ORDER, HTTP_IDEMPOTENCY_KEY="k\x00ey")
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert not Event.objects.filter(tenant=tenant).exists()


@pytest.mark.parametrize("host", ["", "evil.example"])
def test_event_list_with_disallowed_host_answers_json_400(api, host):
    # Regression: Django's DisallowedHost answered its HTML 400 page.
    response = api.get("/api/v1/events", HTTP_HOST=host)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Bad request."}


def test_event_rows_written_in_one_statement_match_the_models(api, tenant):
    # given
    endpoint = make_endpoint(tenant=tenant)
    before = time.time()
    # when
    body = publish(api, ORDER, HTTP_IDEMPOTENCY_KEY="k-rows").json()
    # then: the event and its delivery are what the ORM would have written
    event = Event.objects.get(pk=body["id"])
    assert (event.tenant_id, event.event_type, event.payload) == (
        tenant.pk,
        "order.created",
        {"order_id": 42},
    )
    assert event.idempotency_key == "k-rows"
    [delivery] = Delivery.objects.filter(event=event)
    assert delivery.endpoint_id == endpoint.pk
    assert delivery.tenant_id == tenant.pk
    assert (delivery.attempt_count, delivery.round_start) == (0, 0)
    assert delivery.last_error == delivery.dead_letter_reason == ""
    assert delivery.next_attempt_at == delivery.created_at == event.created_at
    assert delivery.lease_expires_at > delivery.created_at
    # ids made by PostgreSQL are UUIDv7 too: time-ordered, version 7, RFC variant
    for value in (event.pk, delivery.pk):
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert abs((value.int >> 80) / 1000 - before) < 5


@pytest.mark.django_db(transaction=True)
def test_event_same_key_sent_concurrently_is_stored_once(api, tenant):
    make_endpoint(tenant=tenant)
    key = api._credentials["HTTP_AUTHORIZATION"]

    def send(_):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=key)
        response = publish(client, ORDER, HTTP_IDEMPOTENCY_KEY="k-race")
        connection.close()
        return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 7 + [202]
    assert len({event_id for _, event_id in answers}) == 1
    assert Event.objects.filter(tenant=tenant).count() == 1
    assert Delivery.objects.filter(tenant=tenant).count() == 1
