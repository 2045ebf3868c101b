"""A key of tenant B never sees or touches tenant A's objects: 404 on every path."""

import pytest
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus
from subscriptions.models import Endpoint
from tenants.models import ApiKey
from tests.factories import make_endpoint, make_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def owned(tenant, api):
    """Objects of tenant A: an extra key, an endpoint, an event, a dead letter."""
    key_id = api.post("/api/v1/api-keys", {"name": "a"}, format="json").json()["id"]
    endpoint = make_endpoint(tenant=tenant)
    event, [delivery] = make_event(tenant=tenant)
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.DEAD_LETTER, dead_lettered_at=timezone.now()
    )
    return {
        "key": key_id,
        "endpoint": endpoint.pk,
        "event": event.pk,
        "delivery": delivery.pk,
    }


def foreign_requests(ids):
    endpoint, event, delivery, key = (
        ids["endpoint"],
        ids["event"],
        ids["delivery"],
        ids["key"],
    )
    return [
        ("delete", f"/api/v1/api-keys/{key}", None),
        ("get", f"/api/v1/endpoints/{endpoint}", None),
        ("patch", f"/api/v1/endpoints/{endpoint}", {"description": "hacked"}),
        ("put", f"/api/v1/endpoints/{endpoint}", {"url": "https://example.com/"}),
        ("delete", f"/api/v1/endpoints/{endpoint}", None),
        ("get", f"/api/v1/endpoints/{endpoint}/secret", None),
        ("post", f"/api/v1/endpoints/{endpoint}/secret/rotate", {}),
        ("post", f"/api/v1/endpoints/{endpoint}/test", {}),
        (
            "post",
            f"/api/v1/endpoints/{endpoint}/recover",
            {"since": "2026-01-01T00:00Z"},
        ),
        ("get", f"/api/v1/endpoints/{endpoint}/stats", None),
        ("get", f"/api/v1/events/{event}", None),
        ("get", f"/api/v1/deliveries/{delivery}", None),
        ("get", f"/api/v1/deliveries/{delivery}/attempts", None),
        ("post", f"/api/v1/deliveries/{delivery}/retry", None),
    ]


def test_foreign_ids_answer_404_and_change_nothing(owned, other_api):
    secret_before = Endpoint.objects.get(pk=owned["endpoint"]).active_secrets()
    for method, path, body in foreign_requests(owned):
        response = getattr(other_api, method)(path, body, format="json")
        assert response.status_code == 404, (method, path, response.content)
        assert set(response.json()) == {"detail"}
    endpoint = Endpoint.objects.get(pk=owned["endpoint"])
    assert endpoint.description == ""
    assert endpoint.active_secrets() == secret_before
    assert ApiKey.objects.get(pk=owned["key"]).revoked_at is None
    assert (
        Delivery.objects.get(pk=owned["delivery"]).status == DeliveryStatus.DEAD_LETTER
    )


def test_foreign_id_404_is_the_same_as_a_missing_id(owned, other_api, api):
    missing = "01234567-89ab-7def-8123-456789abcdef"
    foreign = other_api.get(f"/api/v1/endpoints/{owned['endpoint']}")
    absent = api.get(f"/api/v1/endpoints/{missing}")
    assert foreign.status_code == absent.status_code == 404
    assert foreign.json() == absent.json()


def test_lists_never_leak_and_filters_by_foreign_ids_are_empty(owned, other_api):
    for path in (
        "/api/v1/api-keys",
        "/api/v1/endpoints",
        "/api/v1/events",
        "/api/v1/deliveries",
        "/api/v1/dead-letters",
        f"/api/v1/deliveries?endpoint={owned['endpoint']}",
        f"/api/v1/deliveries?event={owned['event']}",
        f"/api/v1/dead-letters?endpoint={owned['endpoint']}",
    ):
        response = other_api.get(path)
        assert response.status_code == 200, path
        results = response.json()["results"]
        assert all(
            str(owned[kind]) not in str(results) for kind in ("endpoint", "event")
        ), path
        if "api-keys" not in path:
            assert results == [], path


def test_foreign_replay_by_ids_replays_nothing(owned, other_api):
    response = other_api.post(
        "/api/v1/dead-letters/replay", {"ids": [str(owned["delivery"])]}, format="json"
    )
    assert response.status_code == 202
    assert response.json() == {"replayed": 0}
    assert (
        Delivery.objects.get(pk=owned["delivery"]).status == DeliveryStatus.DEAD_LETTER
    )


def test_malformed_ids_are_404_not_500(api):
    for path in (
        "/api/v1/endpoints/not-a-uuid",
        "/api/v1/events/123",
        "/api/v1/deliveries/%27%20OR%201=1",
    ):
        assert api.get(path).status_code == 404
    assert api.get("/api/v1/deliveries?endpoint=nope").status_code == 400
    assert api.get("/api/v1/deliveries?status=nope").status_code == 400
