"""Batch publishing against the real services: a worker delivers, one confirm round,
and concurrent batches sharing event ids."""

import json
import threading
from collections import Counter

import pytest
import standardwebhooks
from django.db import connection
from rest_framework.test import APIClient

from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.publisher import Publisher
from deliveries.receiver import WebhookReceiver
from tests.conftest import fresh_queues, purge_queues, queued_deliveries, wait_until
from tests.factories import make_endpoint

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = "/api/v1/events/batch"


def send(api, events):
    return api.post(
        BATCH, json.dumps({"events": events}), content_type="application/json"
    )


@pytest.mark.e2e
def test_e2e_batch_events_are_delivered_signed_once_each(api, worker_factory):
    # given: a worker and a receiver checking signatures
    worker_factory()
    with WebhookReceiver() as receiver:
        created = api.post(
            "/api/v1/endpoints", {"url": receiver.url}, format="json"
        ).json()
        receiver.secrets = (created["secret"],)
        events = [
            {"event_type": f"order.n{n}", "payload": {"n": n}, "event_id": f"k-{n}"}
            for n in range(20)
        ]
        # when
        response = send(api, events)
        assert response.status_code == 202, response.content
        ids = [result["id"] for result in response.json()["results"]]
        wait_until(
            lambda: (
                Delivery.objects.filter(
                    event_id__in=ids, status=DeliveryStatus.SUCCEEDED
                ).count()
                == 20
            ),
            timeout=30,
        )
        # a repeat of the whole batch delivers nothing again
        again = send(api, events)
        assert {r["created"] for r in again.json()["results"]} == {False}
        assert not receiver.wait_for(21, timeout=2)
        received = list(receiver.received)
    # then: each event once, verified, with its own body
    assert Counter(r.header("webhook-id") for r in received) == Counter(ids)
    assert all(r.verified is True for r in received)
    webhook = standardwebhooks.Webhook(created["secret"])
    for request in received:
        body = webhook.verify(request.body.decode(), request.headers)
        assert body["data"] == {"n": int(body["type"].removeprefix("order.n"))}


def test_batch_publishes_every_delivery_in_one_confirm_round(api, tenant, monkeypatch):
    # given: two endpoints, and a count of the publisher's confirmed rounds
    purge_queues()
    make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant)
    rounds = []
    real = Publisher.publish

    def counted(self, messages, **kwargs):
        rounds.append(len(messages))
        return real(self, messages, **kwargs)

    monkeypatch.setattr(Publisher, "publish", counted)
    # when
    response = send(api, [{"event_type": "t", "payload": {"n": n}} for n in range(50)])
    # then: 100 messages in one round, all in the queue
    assert response.status_code == 202
    assert rounds == [100]
    deliveries = {str(pk) for pk in Delivery.objects.values_list("pk", flat=True)}
    assert set(queued_deliveries(fresh_queues())) == deliveries
    assert len(deliveries) == 100


def _concurrently(key: str, bodies: list[list[dict]]) -> list:
    """Send each batch from its own thread and database connection at once."""
    barrier = threading.Barrier(len(bodies))
    answers: list = [None] * len(bodies)

    def run(index: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=key)
        try:
            barrier.wait()
            answers[index] = send(client, bodies[index])
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_concurrent_batches_with_the_same_event_ids_store_each_event_once(api, tenant):
    # given: batches sharing ten keys, in opposite orders, with the same bodies
    make_endpoint(tenant=tenant)
    key = api._credentials["HTTP_AUTHORIZATION"]
    shared = [
        {"event_type": "t", "payload": {"n": n}, "event_id": f"k-{n}"}
        for n in range(10)
    ]
    bodies = [
        shared
        if i % 2
        else [*reversed(shared), {"event_type": "t", "payload": {"own": i}}]
        for i in range(6)
    ]
    # when
    answers = _concurrently(key, bodies)
    # then: every batch is accepted; each key's event was created by one of them
    assert [a.status_code for a in answers] == [202] * 6, [a.content for a in answers]
    created = Counter()
    ids_by_key: dict[str, set] = {}
    for body, answer in zip(bodies, answers, strict=True):
        for sent, result in zip(body, answer.json()["results"], strict=True):
            if "event_id" in sent:
                created[sent["event_id"]] += result["created"]
                ids_by_key.setdefault(sent["event_id"], set()).add(result["id"])
    assert created == Counter({f"k-{n}": 1 for n in range(10)})
    assert all(len(ids) == 1 for ids in ids_by_key.values())
    assert Event.objects.filter(tenant=tenant).count() == 10 + 3
    assert Delivery.objects.filter(tenant=tenant).count() == 10 + 3


def test_concurrent_batches_reusing_event_ids_with_other_bodies_are_never_partial(
    api, tenant
):
    # given: batches sharing keys, each with bodies of its own
    make_endpoint(tenant=tenant)
    key = api._credentials["HTTP_AUTHORIZATION"]
    bodies = [
        [
            {"event_type": "t", "payload": {"batch": i, "n": n}, "event_id": f"k-{n}"}
            for n in (range(10) if i % 2 else reversed(range(10)))
        ]
        for i in range(6)
    ]
    # when
    answers = _concurrently(key, bodies)
    # then: one batch won whole; every other one is a 409 that stored nothing
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [202] + [409] * 5, [a.content for a in answers]
    [winner] = [i for i, a in enumerate(answers) if a.status_code == 202]
    events = Event.objects.filter(tenant=tenant)
    assert {e.payload["batch"] for e in events} == {winner}
    assert events.count() == 10
    assert Delivery.objects.filter(tenant=tenant).count() == 10
