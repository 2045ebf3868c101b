"""Deliveries, attempts, manual retry and the dead-letter queue through the API."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus
from tests.factories import make_endpoint, make_event

pytestmark = pytest.mark.django_db

DELIVERY_FIELDS = {
    "id",
    "event",
    "endpoint",
    "status",
    "attempt_count",
    "next_attempt_at",
    "last_status_code",
    "last_error",
    "created_at",
    "updated_at",
}


def dead(delivery: Delivery, *, when=None) -> None:
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.DEAD_LETTER,
        attempt_count=8,
        dead_lettered_at=when or timezone.now(),
        dead_letter_reason="retries exhausted",
    )


def test_delivery_list_filters_and_shape(api, tenant):
    first = make_endpoint(tenant=tenant)
    second = make_endpoint(tenant=tenant)
    event, deliveries = make_event(tenant=tenant)
    dead(deliveries[0])
    listed = api.get("/api/v1/deliveries").json()["results"]
    assert len(listed) == 2
    assert set(listed[0]) >= DELIVERY_FIELDS
    by_status = api.get("/api/v1/deliveries?status=dead_letter").json()["results"]
    assert [d["id"] for d in by_status] == [str(deliveries[0].pk)]
    by_endpoint = api.get(f"/api/v1/deliveries?endpoint={second.pk}").json()["results"]
    assert [d["endpoint"] for d in by_endpoint] == [str(second.pk)]
    by_event = api.get(f"/api/v1/deliveries?event={event.pk}").json()["results"]
    assert len(by_event) == 2
    assert first.pk


def test_delivery_detail_and_attempts(api, tenant, receiver):
    from deliveries.services.attempts import delivery_run

    make_endpoint(tenant=tenant, url=receiver.url)
    _, [delivery] = make_event(tenant=tenant)
    delivery_run(delivery_id=delivery.pk)
    detail = api.get(f"/api/v1/deliveries/{delivery.pk}").json()
    assert detail["status"] == "succeeded"
    assert detail["attempt_count"] == 1
    assert detail["last_status_code"] == 200
    attempts = api.get(f"/api/v1/deliveries/{delivery.pk}/attempts").json()["results"]
    assert len(attempts) == 1
    assert {
        "number",
        "started_at",
        "duration_ms",
        "request_headers",
        "response_status",
        "response_headers",
        "response_body",
        "error",
    } <= set(attempts[0])
    assert attempts[0]["response_status"] == 200


def test_delivery_attempt_response_body_truncated_to_16_kib(api, tenant, settings):
    from deliveries.models import DeliveryAttempt

    make_endpoint(tenant=tenant)
    _, [delivery] = make_event(tenant=tenant)
    from deliveries.attempt_log import stored_body

    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=timezone.now(),
        response_body=stored_body(b"x" * 70_000),
    )
    attempts = api.get(f"/api/v1/deliveries/{delivery.pk}/attempts").json()["results"]
    assert len(attempts[0]["response_body"]) == 16 * 1024


def test_delivery_retry_requeues_any_status(api, tenant):
    make_endpoint(tenant=tenant)
    _, [delivery] = make_event(tenant=tenant)
    dead(delivery)
    response = api.post(f"/api/v1/deliveries/{delivery.pk}/retry")
    assert response.status_code == 202
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.round_start == 8
    assert delivery.next_attempt_at <= timezone.now()
    Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.SUCCEEDED)
    assert api.post(f"/api/v1/deliveries/{delivery.pk}/retry/").status_code == 202
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING


def iso(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_dead_letters_list_and_filters(api, tenant):
    make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant)
    _, (old, new) = make_event(tenant=tenant)
    day_ago = timezone.now() - timedelta(days=1)
    dead(old, when=day_ago - timedelta(days=2))
    dead(new)
    everything = api.get("/api/v1/dead-letters").json()["results"]
    assert {d["id"] for d in everything} == {str(old.pk), str(new.pk)}
    assert everything[0]["status"] == "dead_letter"
    for delivery in (old, new):
        by_endpoint = api.get(f"/api/v1/dead-letters?endpoint={delivery.endpoint_id}")
        assert [d["id"] for d in by_endpoint.json()["results"]] == [str(delivery.pk)]
        assert by_endpoint.json()["results"][0]["endpoint"] == str(delivery.endpoint_id)
    recent = api.get("/api/v1/dead-letters", {"since": iso(day_ago)}).json()["results"]
    assert [d["id"] for d in recent] == [str(new.pk)]
    older = api.get("/api/v1/dead-letters", {"until": iso(day_ago)}).json()["results"]
    assert [d["id"] for d in older] == [str(old.pk)]
    assert api.get("/api/v1/dead-letters?since=yesterday").status_code == 400
    assert api.get("/api/v1/dead-letters?until=yesterday").status_code == 400


def test_dead_letters_replay_by_endpoint_since_and_until(api, tenant):
    # given: two endpoints, each with a dead letter three days old and a new one
    make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant)
    _, first = make_event(tenant=tenant)
    _, second = make_event(tenant=tenant)
    day_ago = timezone.now() - timedelta(days=1)
    for delivery in first:
        dead(delivery, when=day_ago - timedelta(days=2))
    for delivery in second:
        dead(delivery)
    endpoint = first[0].endpoint_id
    [new_of_endpoint] = [d for d in second if d.endpoint_id == endpoint]

    def replay(**body):
        response = api.post("/api/v1/dead-letters/replay", body, format="json")
        assert response.status_code == 202, response.content
        return response.json()["replayed"]

    def still_dead():
        return set(
            Delivery.objects.filter(status=DeliveryStatus.DEAD_LETTER).values_list(
                "pk", flat=True
            )
        )

    # when / then: one endpoint's recent dead letter only
    assert replay(endpoint=str(endpoint), since=iso(day_ago)) == 1
    assert new_of_endpoint.pk not in still_dead()
    assert still_dead() == {d.pk for d in first + second} - {new_of_endpoint.pk}
    # when / then: everything older than a day, both endpoints
    assert replay(until=iso(day_ago)) == 2
    assert still_dead() == {d.pk for d in second} - {new_of_endpoint.pk}
    # nothing matches any more
    assert replay(until=iso(day_ago)) == 0


def test_dead_letters_replay_by_filter_and_ids(api, tenant):
    make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant)
    _, first = make_event(tenant=tenant)
    _, second = make_event(tenant=tenant)
    for delivery in first + second:
        dead(delivery)
    by_ids = api.post(
        "/api/v1/dead-letters/replay",
        {"ids": [str(first[0].pk)]},
        format="json",
    )
    assert by_ids.status_code == 202
    assert by_ids.json() == {"replayed": 1}
    everything = api.post("/api/v1/dead-letters/replay", {}, format="json")
    assert everything.json() == {"replayed": 3}
    assert not Delivery.objects.filter(status=DeliveryStatus.DEAD_LETTER).exists()
    replayed = Delivery.objects.get(pk=first[0].pk)
    assert replayed.round_start == replayed.attempt_count == 8
    assert (
        api.post("/api/v1/dead-letters/replay", {"ids": "x"}, format="json").status_code
        == 400
    )


def test_dead_letters_replay_is_bounded_oldest_first_with_remaining(
    api, tenant, settings
):
    # given: five dead letters, one call may replay two
    settings.WEBHOOK_REPLAY_MAX = 2
    make_endpoint(tenant=tenant)
    made = [make_event(tenant=tenant)[1][0] for _ in range(5)]
    start = timezone.now() - timedelta(hours=5)
    for hours, delivery in zip((4, 0, 3, 1, 2), made, strict=True):
        dead(delivery, when=start + timedelta(hours=hours))
    by_age = [made[i] for i in (1, 3, 4, 2, 0)]

    def replay():
        response = api.post("/api/v1/dead-letters/replay", {}, format="json")
        assert response.status_code == 202, response.content
        return response.json()

    def pending():
        return set(
            Delivery.objects.filter(status=DeliveryStatus.PENDING).values_list(
                "pk", flat=True
            )
        )

    # when / then: the two oldest, three left; then two more; then the last
    assert replay() == {"replayed": 2, "remaining": 3}
    assert pending() == {d.pk for d in by_age[:2]}
    assert replay() == {"replayed": 2, "remaining": 1}
    assert pending() == {d.pk for d in by_age[:4]}
    assert replay() == {"replayed": 1}
    assert replay() == {"replayed": 0}


def test_dead_letters_replay_skips_inactive_endpoints_and_counts_them(api, tenant):
    # given: dead letters of an active and of a disabled endpoint
    active = make_endpoint(tenant=tenant, event_types=["a"])
    inactive = make_endpoint(tenant=tenant, event_types=["b"])
    _, [to_active] = make_event(tenant=tenant, event_type="a")
    _, [to_inactive] = make_event(tenant=tenant, event_type="b")
    dead(to_active)
    dead(to_inactive)
    inactive.is_active = False
    inactive.save()
    # when
    response = api.post("/api/v1/dead-letters/replay", {}, format="json")
    # then
    assert response.json() == {"replayed": 1, "skipped": 1}
    to_active.refresh_from_db()
    to_inactive.refresh_from_db()
    assert to_active.status == DeliveryStatus.PENDING
    assert to_inactive.status == DeliveryStatus.DEAD_LETTER
    assert active.is_active
