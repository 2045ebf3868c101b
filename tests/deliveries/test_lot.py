"""The engine's parking lot: which refusals wait in the worker, and for how long."""

from collections import Counter
from types import SimpleNamespace

import pytest

from deliveries.engine import lot as parking_lot
from deliveries.engine.lot import Lot, Parked
from deliveries.services.scheduling import LOT_WAIT_MAX

LANE_MAX = 32


def item(endpoint="a", wait=0.05, reason="concurrency", since=None) -> Parked:
    parked = Parked(
        job=object(),
        delivery=SimpleNamespace(endpoint_id=endpoint),
        wait=wait,
        reason=reason,
    )
    if since is not None:
        parked.since = since
    return parked


def test_lot_parks_only_short_flow_control_waits():
    lot = Lot(per_endpoint=20, lane_max=LANE_MAX)
    assert lot.park(item(reason="concurrency"))
    assert lot.park(item(reason="rate_limited", wait=0.1))
    assert not lot.park(item(reason="circuit_open", wait=0.1))
    assert not lot.park(item(reason="paused", wait=0.1))
    assert not lot.park(item(wait=LOT_WAIT_MAX + 0.1))
    assert len(lot) == 2


@pytest.mark.parametrize(
    ("cap", "wait", "bound"),
    [
        (20, 2.0, 20),  # a slot every 2 s: one round of its cap
        (2, 0.2, 20),  # 10 per second: two seconds' worth
        (20, 0.001, LANE_MAX),  # a fast one, bounded all the same
        (1, 2.0, 1),
    ],
)
def test_lot_lane_holds_what_its_endpoint_clears_in_two_seconds(cap, wait, bound):
    lot = Lot(per_endpoint=cap, lane_max=LANE_MAX)
    parked = sum(lot.park(item(wait=wait)) for _ in range(LANE_MAX + 10))
    assert parked == bound


def test_lot_lane_and_turnover_follow_the_endpoints_own_cap():
    # given: the default cap is 20; this endpoint's own is 2, at 1 s a request
    lot = Lot(per_endpoint=20, lane_max=LANE_MAX)
    own = SimpleNamespace(in_flight_cap=2, rate_limit=None)

    def parked(**fields) -> Parked:
        found = item(wait=1.0, **fields)
        found.delivery.endpoint = own
        return found

    # then: its lane holds two seconds of two slots, and a slot frees every 0.5 s
    assert sum(lot.park(parked()) for _ in range(10)) == 4
    assert lot.turnover(parked()) == pytest.approx(0.5)
    assert lot.turnover(item(wait=1.0)) == pytest.approx(0.05)  # the default's
    # a rate-limited endpoint takes one delivery per token
    own.rate_limit = 4
    assert lot.turnover(parked(reason="rate_limited")) == pytest.approx(0.25)


def test_lot_trim_lowers_a_lane_whose_endpoint_turned_slow():
    lot = Lot(per_endpoint=20, lane_max=LANE_MAX)
    items = [item(wait=0.05) for _ in range(LANE_MAX)]
    assert all(lot.park(parked) for parked in items)
    # when: its requests now take two seconds (bound 2 s x 20 / 2 s = 20)
    removed = lot.trim(item(wait=2.0))
    assert removed == items[:19:-1]
    assert len(lot) == 20


def test_lot_take_gives_as_many_as_requests_ended_in_order():
    lot = Lot(per_endpoint=20, lane_max=LANE_MAX)
    first, second, third = item(), item(), item()
    other = item(endpoint="b")
    for parked in (first, second, third, other):
        lot.park(parked)
    assert lot.take(Counter({"a": 2})) == [first, second]
    assert lot.take(Counter({"a": 5})) == [third]
    assert len(lot) == 1


def test_lot_take_looks_again_at_a_lane_whose_wait_is_over(monkeypatch):
    lot = Lot(per_endpoint=20, lane_max=LANE_MAX)
    parked = item(wait=0.01, reason="rate_limited")
    lot.park(parked)
    assert lot.next_check() <= 0.01
    now = parking_lot.time.monotonic()
    monkeypatch.setattr(parking_lot.time, "monotonic", lambda: now + 1)
    assert lot.take(Counter()) == [parked]


def test_lot_expired_and_clear_hand_back_what_waited_too_long(monkeypatch):
    lot = Lot(per_endpoint=20, lane_max=LANE_MAX)
    now = parking_lot.time.monotonic()
    old = item(since=now - parking_lot.PARK_SECONDS + 0.5)
    fresh = item()
    lot.park(old)
    lot.park(fresh)
    monkeypatch.setattr(parking_lot.time, "monotonic", lambda: now + 1)
    assert lot.expired() == [old]
    assert not lot.park(item(since=now - parking_lot.PARK_SECONDS - 1))
    assert lot.clear() == [fresh]
    assert lot.next_check() is None


def test_lot_release_hands_back_one_endpoints_lane_in_order():
    lot = Lot(per_endpoint=20, lane_max=LANE_MAX)
    first, second, other = item(), item(), item(endpoint="b")
    for parked in (first, other, second):
        lot.park(parked)
    assert lot.release("a") == [first, second]
    assert lot.release("a") == []
    assert len(lot) == 1
