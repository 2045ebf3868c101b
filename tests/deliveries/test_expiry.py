"""Events that expire: `expires_at` / `ttl_seconds`, the `expired` status, `force`."""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.receiver import WebhookReceiver
from deliveries.services.attempts import deliveries_admit
from deliveries.services.recovery import endpoint_recover
from deliveries.services.retention import events_purge_expired
from deliveries.services.scheduling import SKIPPED
from deliveries.services.sweeps import deliveries_enqueue_due, deliveries_expire
from tests.conftest import wait_until
from tests.deliveries.test_e2e_worker import create_endpoint, delivery_of, final
from tests.factories import make_endpoint
from webhooks_project import metrics

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events"


def post(api, path=EVENTS, **body):
    return api.post(path, body, format="json")


def event_body(**fields) -> dict:
    return {"event_type": "order.created", "payload": {"n": 1}, **fields}


def expired_counter() -> float:
    return metrics.DELIVERIES_EXPIRED._value.get()


def past(delivery: Delivery, seconds: float = 1) -> None:
    """Move a delivery's (and its event's) expiry `seconds` into the past."""
    moment = timezone.now() - timedelta(seconds=seconds)
    Delivery.objects.filter(pk=delivery.pk).update(expires_at=moment)
    Event.objects.filter(pk=delivery.event_id).update(expires_at=moment)


def test_ttl_seconds_sets_the_expiry_of_the_event_and_its_deliveries(api, tenant):
    make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant)
    before = timezone.now()
    response = post(api, **event_body(ttl_seconds=600))
    assert response.status_code == 202, response.content
    answer = response.json()
    expires = Event.objects.get(pk=answer["id"]).expires_at
    assert before + timedelta(seconds=600) <= expires
    assert expires <= timezone.now() + timedelta(seconds=600)
    assert answer["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    deliveries = Delivery.objects.filter(event_id=answer["id"])
    assert [d.expires_at for d in deliveries] == [expires, expires]
    shown = api.get(f"{EVENTS}/{answer['id']}").json()
    assert shown["expires_at"] == answer["expires_at"]
    listed = api.get(f"/api/v1/deliveries/{deliveries[0].pk}").json()
    assert listed["expires_at"] == answer["expires_at"]


def test_expires_at_is_kept_as_given_and_none_means_never(api, tenant):
    make_endpoint(tenant=tenant)
    moment = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    given = post(api, **event_body(expires_at=moment.isoformat())).json()
    assert Event.objects.get(pk=given["id"]).expires_at == moment
    plain = post(api, **event_body()).json()
    assert plain["expires_at"] is None
    assert Delivery.objects.get(event_id=plain["id"]).expires_at is None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": -5}, "ttl_seconds"),
        ({"ttl_seconds": "soon"}, "ttl_seconds"),
        ({"ttl_seconds": 400 * 86400}, "ttl_seconds"),
        ({"expires_at": "yesterday"}, "expires_at"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2999-01-01T00:00:00Z"}, "expires_at"),
        ({"ttl_seconds": 60, "expires_at": "2999-01-01T00:00:00Z"}, "expires_at"),
    ],
)
def test_a_bad_expiry_is_a_400_naming_the_field(api, tenant, fields, named):
    response = post(api, **event_body(**fields))
    assert response.status_code == 400
    assert named in response.json(), response.json()
    assert not Event.objects.filter(tenant=tenant).exists()


def test_both_forms_at_once_are_refused(api, tenant):
    moment = (timezone.now() + timedelta(hours=1)).isoformat()
    response = post(api, **event_body(ttl_seconds=60, expires_at=moment))
    assert response.status_code == 400
    assert "ttl_seconds" in response.json()


def test_batch_items_expire_each_as_given(api, tenant):
    make_endpoint(tenant=tenant)
    items = [
        event_body(ttl_seconds=60),
        event_body(),
        event_body(expires_at=(timezone.now() + timedelta(hours=1)).isoformat()),
    ]
    response = api.post(
        f"{EVENTS}/batch",
        json.dumps({"events": items}),
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    results = response.json()["results"]
    expiries = [
        Delivery.objects.get(event_id=result["id"]).expires_at for result in results
    ]
    assert expiries[0] is not None and expiries[1] is None and expiries[2] is not None
    assert [r["expires_at"] is not None for r in results] == [True, False, True]
    bad = api.post(
        f"{EVENTS}/batch",
        json.dumps({"events": [event_body(), event_body(ttl_seconds=0)]}),
        content_type="application/json",
    )
    assert bad.status_code == 400
    assert list(bad.json()["events"]["1"]) == ["ttl_seconds"]


def test_a_delivery_past_its_expiry_is_not_claimed(api, tenant):
    make_endpoint(tenant=tenant)
    answer = post(api, **event_body(ttl_seconds=60)).json()
    delivery = Delivery.objects.get(event_id=answer["id"])
    past(delivery)
    admission = deliveries_admit(delivery_ids=[str(delivery.pk)])
    assert admission.ready == [] and admission.refused == []
    assert admission.settled == {str(delivery.pk): SKIPPED}
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.attempt_count == 0


def test_the_sweep_settles_what_expired_and_leaves_the_rest(api, tenant):
    make_endpoint(tenant=tenant)
    rows = {}
    for name in ("pending", "failed", "attempting", "lost", "later", "never"):
        ttl = {} if name == "never" else {"ttl_seconds": 600}
        answer = post(api, **event_body(**ttl)).json()
        rows[name] = Delivery.objects.get(event_id=answer["id"])
    now = timezone.now()
    Delivery.objects.filter(pk=rows["failed"].pk).update(status=DeliveryStatus.FAILED)
    Delivery.objects.filter(pk=rows["attempting"].pk).update(
        status=DeliveryStatus.IN_PROGRESS, lease_expires_at=now + timedelta(minutes=1)
    )
    Delivery.objects.filter(pk=rows["lost"].pk).update(
        status=DeliveryStatus.IN_PROGRESS, lease_expires_at=now - timedelta(minutes=1)
    )
    for name in ("pending", "failed", "attempting", "lost"):
        past(rows[name])
    counted = expired_counter()

    assert deliveries_expire() == 3

    status = {
        name: Delivery.objects.get(pk=row.pk).status for name, row in rows.items()
    }
    assert status == {
        "pending": DeliveryStatus.EXPIRED,
        "failed": DeliveryStatus.EXPIRED,
        "attempting": DeliveryStatus.IN_PROGRESS,  # its attempt finishes first
        "lost": DeliveryStatus.EXPIRED,
        "later": DeliveryStatus.PENDING,
        "never": DeliveryStatus.PENDING,
    }
    expired = Delivery.objects.get(pk=rows["pending"].pk)
    assert expired.lease_expires_at is None and expired.next_attempt_at is None
    assert expired_counter() == counted + 3
    assert deliveries_expire() == 0


def test_retrying_an_expired_delivery_needs_force(api, tenant):
    make_endpoint(tenant=tenant)
    answer = post(api, **event_body(ttl_seconds=60)).json()
    delivery = Delivery.objects.get(event_id=answer["id"])
    past(delivery)
    deliveries_expire()
    url = f"/api/v1/deliveries/{delivery.pk}/retry"

    refused = api.post(url)
    assert refused.status_code == 409
    assert "force" in refused.json()["detail"]
    assert Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.EXPIRED
    assert api.post(url, {"force": "maybe"}, format="json").status_code == 400

    forced = api.post(url, {"force": True}, format="json")
    assert forced.status_code == 202, forced.content
    assert forced.json()["status"] == DeliveryStatus.PENDING
    assert forced.json()["expires_at"] is None
    assert deliveries_admit(delivery_ids=[str(delivery.pk)]).ready


def test_a_delivery_past_expiry_not_yet_swept_needs_force_too(api, tenant):
    make_endpoint(tenant=tenant)
    answer = post(api, **event_body(ttl_seconds=60)).json()
    delivery = Delivery.objects.get(event_id=answer["id"])
    past(delivery)
    response = api.post(f"/api/v1/deliveries/{delivery.pk}/retry")
    assert response.status_code == 409


def test_other_tenants_expired_delivery_is_404(api, other_api, tenant):
    make_endpoint(tenant=tenant)
    answer = post(api, **event_body(ttl_seconds=60)).json()
    delivery = Delivery.objects.get(event_id=answer["id"])
    response = other_api.post(
        f"/api/v1/deliveries/{delivery.pk}/retry", {"force": True}, format="json"
    )
    assert response.status_code == 404


def test_recovery_leaves_out_events_past_their_expiry(api, tenant):
    endpoint = make_endpoint(tenant=tenant)
    since = timezone.now() - timedelta(minutes=1)
    kept = post(api, **event_body(ttl_seconds=600)).json()
    gone = post(api, **event_body(ttl_seconds=600)).json()
    Event.objects.filter(pk=gone["id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    Delivery.objects.filter(endpoint=endpoint).delete()
    endpoint_recover(endpoint=endpoint, since=since)
    recovered = Delivery.objects.filter(endpoint=endpoint)
    assert [str(d.event_id) for d in recovered] == [kept["id"]]
    assert recovered[0].expires_at == Event.objects.get(pk=kept["id"]).expires_at


def test_retention_purges_events_whose_deliveries_expired(api, tenant):
    make_endpoint(tenant=tenant)
    answer = post(api, **event_body(ttl_seconds=60)).json()
    delivery = Delivery.objects.get(event_id=answer["id"])
    past(delivery)
    deliveries_expire()
    long_ago = timezone.now() + timedelta(days=400)
    events_purge_expired(now=long_ago)
    assert not Event.objects.filter(pk=answer["id"]).exists()


@pytest.mark.django_db(transaction=True)
def test_e2e_a_failing_delivery_expires_instead_of_dead_lettering(api, worker_factory):
    # given: retries a second apart, and a receiver that always fails
    worker_factory(WEBHOOK_RETRY_SCHEDULE="1,1,1,1,1,1,1,1")
    with WebhookReceiver(statuses=[500] * 50) as receiver:
        create_endpoint(api, receiver.url)
        counted = expired_counter()
        # when: an event that must arrive within 2 seconds
        answer = post(api, **event_body(ttl_seconds=2)).json()
        wait_until(lambda: len(receiver.received) >= 1, timeout=20)

        # then: once past its expiry (the beat sweep's part run here), it is
        # settled as expired, and no attempt follows
        def settled():
            deliveries_expire()
            return final(answer["id"], DeliveryStatus.EXPIRED)()

        delivery = wait_until(settled, timeout=20)
        attempts = len(receiver.received)
        time.sleep(2.5)  # the retries already queued arrive, and are not made
        assert len(receiver.received) == attempts
    assert delivery.dead_lettered_at is None
    assert delivery_of(answer["id"]).attempt_count == attempts
    assert delivery_of(answer["id"]).status == DeliveryStatus.EXPIRED
    assert expired_counter() == counted + 1


def test_a_forced_retry_during_an_attempt_lifts_the_expiry(api, tenant):
    make_endpoint(tenant=tenant)
    answer = post(api, **event_body(ttl_seconds=60)).json()
    delivery = Delivery.objects.get(event_id=answer["id"])
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.IN_PROGRESS,
        lease_expires_at=timezone.now() + timedelta(minutes=1),
    )
    response = api.post(
        f"/api/v1/deliveries/{delivery.pk}/retry", {"force": True}, format="json"
    )
    assert response.status_code == 202
    assert response.json()["retry_requested_at"] is not None
    assert Delivery.objects.get(pk=delivery.pk).expires_at is None


def test_the_enqueue_sweep_leaves_rows_past_expiry_to_the_expiry(api, tenant):
    make_endpoint(tenant=tenant)
    answer = post(api, **event_body(ttl_seconds=60)).json()
    delivery = Delivery.objects.get(event_id=answer["id"])
    long_ago = timezone.now() - timedelta(minutes=5)
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=long_ago, lease_expires_at=long_ago
    )
    past(delivery)
    assert deliveries_enqueue_due(backlog=0).enqueued == 0
    assert deliveries_expire() == 1


def test_dead_letter_replays_skip_those_of_expired_events(api, tenant):
    make_endpoint(tenant=tenant)
    kept = post(api, **event_body(ttl_seconds=600)).json()
    gone = post(api, **event_body(ttl_seconds=600)).json()
    Delivery.objects.filter(tenant=tenant).update(
        status=DeliveryStatus.DEAD_LETTER, dead_lettered_at=timezone.now()
    )
    past(Delivery.objects.get(event_id=gone["id"]))
    response = api.post("/api/v1/dead-letters/replay", {}, format="json")
    assert response.status_code == 202
    assert response.json() == {"replayed": 1, "skipped": 1}
    assert Delivery.objects.get(event_id=kept["id"]).status == DeliveryStatus.PENDING
    assert Delivery.objects.get(event_id=gone["id"]).status == (
        DeliveryStatus.DEAD_LETTER
    )


def test_the_event_serializer_declares_no_field_a_shallow_copy_would_share():
    # EventCreateSerializer copies its declared fields shallowly per request: a
    # field with a child or nested fields would be shared, bound, across requests.
    from rest_framework import serializers

    from deliveries.api.serializers import EventCreateSerializer

    shared = (serializers.ListField, serializers.DictField, serializers.BaseSerializer)
    for name, field in EventCreateSerializer._declared_fields.items():
        assert not isinstance(field, shared), name
