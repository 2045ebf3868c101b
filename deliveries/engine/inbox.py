"""What the admit thread takes in, each kind apart: jobs, wake-ups and recoveries.

- jobs: `deliveries.deliver` messages the consumer handed over, to admit;
- woken: per endpoint, how many of its requests just ended (deliveries parked
  behind its cap may go);
- recovered: endpoints whose probe just succeeded (they take deliveries again).

One condition wakes the admit thread for any of them, or when the engine stops.
"""

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# Most deliveries one statement claims or records.
BATCH_MAX = 200


@dataclass
class Job:
    """One `deliveries.deliver` message: the delivery and how to settle it."""

    delivery_id: str
    ack: Callable[[], object]
    reject: Callable[[bool], object]  # requeue?
    retries: int = 0
    endpoint_id: str | None = None  # the publisher's hint, when it gave one


@dataclass
class Intake:
    """What one turn of the admit thread acts on."""

    jobs: list[Job] = field(default_factory=list)
    woken: Counter = field(default_factory=Counter)
    recovered: set[str] = field(default_factory=set)


class Inbox:
    """Jobs, wake-ups and recoveries for the admit thread, each in its own place."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._intake = Intake()
        self._stop_signalled = False  # one wake-up, taken by the next `take`

    def put_jobs(self, jobs: list[Job]) -> None:
        """Messages to admit."""
        with self._ready:
            self._intake.jobs.extend(jobs)
            self._ready.notify()

    def put_woken(self, ended: Counter) -> None:
        """Requests that ended, by endpoint."""
        with self._ready:
            self._intake.woken.update(ended)
            self._ready.notify()

    def put_recovered(self, endpoint_ids) -> None:
        """Endpoints whose probe succeeded."""
        with self._ready:
            self._intake.recovered.update(endpoint_ids)
            self._ready.notify()

    def stop(self) -> None:
        """Wake the admit thread once: the engine stops."""
        with self._ready:
            self._stop_signalled = True
            self._ready.notify()

    def take(self, *, timeout: float | None, linger: Callable[[int], float]) -> Intake:
        """What came in: at most BATCH_MAX jobs, every wake-up and recovery.

        Waits up to `timeout` (None: until something comes) for anything at
        all. Then, if `linger(jobs)` says so, waits that long once more for
        further jobs, so that a small batch under load is admitted with the next.
        """
        with self._ready:
            if not self._pending():
                self._ready.wait(timeout)
            wait = linger(len(self._intake.jobs))
            if wait > 0:
                self._ready.wait(wait)
            taken, rest = self._intake, self._intake.jobs[BATCH_MAX:]
            taken.jobs = taken.jobs[:BATCH_MAX]
            self._intake = Intake(jobs=rest)
            self._stop_signalled = False
            return taken

    def _pending(self) -> bool:
        intake = self._intake
        return bool(
            intake.jobs or intake.woken or intake.recovered or self._stop_signalled
        )
