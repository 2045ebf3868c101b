"""The fault suite's order invariant on made-up arrivals (no services needed)."""

import json

from tests.faults.invariants import OrderViolation, order_violations
from tests.faults.producers import Lines
from tests.faults.receivers import keyed_position


def test_arrivals_in_counter_order_are_no_violation():
    # given: two lines of one endpoint, interleaved, each in order (with a gap:
    # a dead letter's counter never arrives)
    arrivals = [
        ("ep-a", "p0-line0", 1),
        ("ep-a", "p0-line1", 1),
        ("ep-a", "p0-line0", 2),
        ("ep-a", "p0-line0", 4),
        ("ep-a", "p0-line1", 2),
    ]
    # when / then
    assert order_violations(arrivals) == []


def test_an_earlier_counter_after_a_later_one_is_a_violation():
    # given: counter 2 of a line arrives after 3, and 1 after both
    arrivals = [
        ("ep-a", "p0-line0", 3),
        ("ep-a", "p0-line0", 2),
        ("ep-a", "p0-line0", 1),
        ("ep-a", "p0-line0", 4),
    ]
    # when
    violations = order_violations(arrivals)
    # then: each late arrival is counted once, against the highest before it
    assert violations == [
        OrderViolation("ep-a", "p0-line0", 2, 3),
        OrderViolation("ep-a", "p0-line0", 1, 3),
    ]


def test_duplicates_of_an_arrived_counter_are_not_arrivals():
    # given: counter 1 delivered again (a lost outcome) after 2 arrived
    arrivals = [
        ("ep-a", "p0-line0", 1),
        ("ep-a", "p0-line0", 2),
        ("ep-a", "p0-line0", 1),
        ("ep-a", "p0-line0", 2),
        ("ep-a", "p0-line0", 3),
    ]
    # when / then
    assert order_violations(arrivals) == []


def test_lines_are_per_endpoint_and_excluded_deliveries_are_skipped():
    # given: one line at two endpoints, each in order by itself; at a third,
    # counter 1 (a replayed dead letter) arrives after 2
    arrivals = [
        ("ep-a", "p0-line0", 2),
        ("ep-b", "p0-line0", 1),
        ("ep-b", "p0-line0", 2),
        ("ep-a", "p0-line0", 3),
        ("ep-c", "p0-line0", 2),
        ("ep-c", "p0-line0", 1),
    ]
    # when / then
    assert order_violations(arrivals, excluded={("ep-c", "p0-line0", 1)}) == []
    assert order_violations(arrivals) == [OrderViolation("ep-c", "p0-line0", 1, 2)]


def test_receivers_read_the_line_and_counter_of_keyed_envelopes():
    # given: a keyed and an unkeyed envelope
    keyed = {"id": "e1", "data": {"n": 4, "line": "p1-line0", "counter": 7}}
    unkeyed = {"id": "e2", "data": {"n": 5}}
    # when / then
    assert keyed_position(json.dumps(keyed).encode()) == ("p1-line0", 7)
    assert keyed_position(json.dumps(unkeyed).encode()) is None


def test_a_third_of_a_producers_events_are_keyed_on_its_lines_in_turn():
    # given
    lines = Lines(producer=2, count=4)
    # when
    picked = [lines.pick() for _ in range(24)]
    # then: every third event is keyed, on the four lines in turn
    assert [name for i, name in enumerate(picked) if i % 3 != 2] == [None] * 16
    assert picked[2::3] == [f"p2-line{i % 4}" for i in range(1, 9)]
    # and a retired line takes no more events
    lines.retired.add("p2-line1")
    assert [lines.pick() for _ in range(12)][2::3] == [
        None,
        "p2-line2",
        "p2-line3",
        "p2-line0",
    ]
