"""Where the engine holds claimed deliveries that flow control said wait for a moment.

An endpoint at its in-flight cap frees a slot as soon as one of its requests ends,
and a rate-limited one has its next token due in a fraction of a second: sending
such a delivery through the broker's delayed queues and back would cost more than
the wait. The lot keeps a few of them per endpoint, in order, and gives them back
when a request to that endpoint ends (`wake`) or when their wait is over. Whatever
does not fit, waits too long, or outstays PARK_SECONDS is postponed as before.
"""

import time
from collections import Counter, deque
from dataclasses import dataclass, field

from deliveries.services.scheduling import LOT_WAIT_MAX, Place, wait_place

# Longest a delivery stays parked before it is postponed the ordinary way.
PARK_SECONDS = 5.0
# How often an endpoint at its cap is looked at again, in case the slot was freed
# by another worker process (whose requests do not wake this one).
RECHECK_SECONDS = 0.2


@dataclass
class Parked:
    """One claimed delivery waiting in the lot."""

    job: object
    delivery: object
    wait: float
    reason: str
    since: float = field(default_factory=time.monotonic)


@dataclass
class _Lane:
    items: deque = field(default_factory=deque)
    check_at: float = 0.0


class Lot:
    """Parked deliveries by endpoint; `per_endpoint` is the default in-flight cap.

    A slow endpoint can thus hold only a few of the worker's prefetched messages
    besides its requests in flight, and no endpoint more than `lane_max` (a
    share of the prefetch), so the others always keep theirs.
    """

    def __init__(self, *, per_endpoint: int, lane_max: int) -> None:
        self.per_endpoint = per_endpoint
        self.lane_max = lane_max
        self._lanes: dict[object, _Lane] = {}

    @property
    def empty(self) -> bool:
        """Whether nothing is parked (safe to read from another thread)."""
        return not self._lanes

    def __len__(self) -> int:
        return sum(len(lane.items) for lane in self._lanes.values())

    def park(self, item: Parked, *, front: bool = False) -> bool:
        """Hold `item`; False when it cannot wait here (the caller postpones it)."""
        if wait_place(wait=item.wait, reason=item.reason) != Place.LOT:
            return False
        if time.monotonic() - item.since > PARK_SECONDS:
            return False
        lane = self._lanes.setdefault(item.delivery.endpoint_id, _Lane())
        if len(lane.items) >= self._bound(item):
            return False
        if front:
            lane.items.appendleft(item)
        else:
            lane.items.append(item)
        wait = RECHECK_SECONDS if item.reason == "concurrency" else item.wait
        check_at = time.monotonic() + wait
        lane.check_at = (
            check_at if len(lane.items) == 1 else min(lane.check_at, check_at)
        )
        return True

    def _cap(self, item: Parked) -> int:
        """The in-flight cap of the item's endpoint (its own, or the default)."""
        endpoint = getattr(item.delivery, "endpoint", None)
        return getattr(endpoint, "in_flight_cap", 0) or self.per_endpoint

    def _bound(self, item: Parked) -> int:
        # A slot frees about every `wait` seconds: a lane holds as many as its
        # endpoint takes in LOT_WAIT_MAX (its in-flight cap, or one token, per wait).
        slots = self._cap(item) if item.reason == "concurrency" else 1
        fit = int(LOT_WAIT_MAX * slots / max(item.wait, 1e-3))
        return min(self.lane_max, max(1, fit))

    def turnover(self, item: Parked) -> float:
        """Seconds between two deliveries the busy endpoint of `item` can take."""
        rate = getattr(getattr(item.delivery, "endpoint", None), "rate_limit", None)
        if item.reason == "rate_limited" and rate:
            return 1 / rate
        # At its cap a slot frees about every request duration (the wait).
        return item.wait / self._cap(item)

    def trim(self, item: Parked) -> list[Parked]:
        """After flow control answered `item` again: what its lane no longer holds.

        An endpoint that turns slow (its requests in flight keep running) lowers
        its lane's bound; the newest items beyond it come out.
        """
        lane = self._lanes.get(item.delivery.endpoint_id)
        if lane is None:
            return []
        removed = []
        while len(lane.items) > self._bound(item):
            removed.append(lane.items.pop())
        return removed

    def take(self, woken: Counter) -> list[Parked]:
        """What to ask flow control again: per woken endpoint, as many as ended.

        Lanes whose wait is over give their first item too.
        """
        now = time.monotonic()
        taken: list[Parked] = []
        for endpoint_id, lane in list(self._lanes.items()):
            count = woken.get(endpoint_id, 0)
            if not count and lane.check_at <= now:
                count = 1
            while count and lane.items:
                taken.append(lane.items.popleft())
                count -= 1
            if not lane.items:
                del self._lanes[endpoint_id]
        return taken

    def waiting(self, endpoint_id) -> int:
        """How many deliveries the lot holds for `endpoint_id`."""
        lane = self._lanes.get(endpoint_id)
        return len(lane.items) if lane else 0

    def release(self, endpoint_id) -> list[Parked]:
        """Everything parked for `endpoint_id`, out of the lot."""
        lane = self._lanes.pop(endpoint_id, None)
        return list(lane.items) if lane else []

    def expired(self) -> list[Parked]:
        """Items parked longer than PARK_SECONDS, out of the lot."""
        cutoff = time.monotonic() - PARK_SECONDS
        found: list[Parked] = []
        for endpoint_id, lane in list(self._lanes.items()):
            while lane.items and lane.items[0].since < cutoff:
                found.append(lane.items.popleft())
            if not lane.items:
                del self._lanes[endpoint_id]
        return found

    def next_check(self) -> float | None:
        """Seconds until a lane should be looked at again (None: the lot is empty)."""
        if not self._lanes:
            return None
        soonest = min(
            min(lane.check_at, lane.items[0].since + PARK_SECONDS)
            for lane in self._lanes.values()
        )
        return max(0.0, soonest - time.monotonic())

    def clear(self) -> list[Parked]:
        """Everything parked, out of the lot."""
        items = [item for lane in self._lanes.values() for item in lane.items]
        self._lanes.clear()
        return items
