"""The engine's postponements: a busy endpoint's overflow waits its turn."""

from types import SimpleNamespace

import pytest

from deliveries.engine.engine import DeliveryEngine
from deliveries.engine.inbox import Job
from deliveries.engine.lot import Parked
from deliveries.models import Delivery
from deliveries.services.claim import deliveries_claim
from tests.conftest import purge_queues
from tests.factories import make_endpoint, make_event

# The engine tends its connection (closes it when old): not inside a test transaction.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def engine():
    purge_queues()
    engine = DeliveryEngine(pool=SimpleNamespace(limit=4))
    yield engine
    engine.stop(5)
    purge_queues()


def overflow(tenant, count: int, **endpoint_fields) -> list[Delivery]:
    make_endpoint(tenant=tenant, **endpoint_fields)
    ids = [make_event(tenant=tenant)[1][0].pk for _ in range(count)]
    claimed = {d.pk: d for d in deliveries_claim(delivery_ids=ids)}
    return [claimed[pk] for pk in ids]


def put_off(engine: DeliveryEngine, deliveries: list[Delivery], reason: str):
    items = [
        Parked(
            job=Job(delivery_id=str(d.pk), ack=lambda: None, reject=lambda _: None),
            delivery=d,
            wait=0.5,
            reason=reason,
        )
        for d in deliveries
    ]
    with engine._idle:  # as for messages the engine took
        engine._busy += len(items)
    engine._postpone(items)
    due = dict(
        Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).values_list(
            "pk", "next_attempt_at"
        )
    )
    first = due[deliveries[0].pk]
    return [(due[d.pk] - first).total_seconds() for d in deliveries]


def test_busy_endpoints_overflow_is_put_off_by_its_place_in_line(tenant, engine):
    # given: six deliveries an endpoint at its cap of 2 (500 ms a request)
    # could not take, nothing of it in the lot
    deliveries = overflow(tenant, 6, max_in_flight=2)
    # when: they are put off together
    offsets = put_off(engine, deliveries, "concurrency")
    # then: each comes back when a slot should be free for it (one every
    # 250 ms), not all at once to cycle through the broker again
    assert offsets == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 1.25], abs=0.01)


def test_rate_limited_overflow_is_put_off_a_token_apart(tenant, engine):
    deliveries = overflow(tenant, 3, rate_limit=10)
    offsets = put_off(engine, deliveries, "rate_limited")
    assert offsets == pytest.approx([0, 0.1, 0.2], abs=0.01)
