"""The fault suite's producers: events at a steady rate, keyed ones in lines.

Each producer publishes with an `Idempotency-Key`, retrying the same key until
the API gives a definite answer (as a producer should); every third event of a
producer is keyed, on its lines in turn, one event of a line at a time.
"""

import itertools
import threading
import time
import uuid
from collections import Counter

import requests

from .stack import Web

# Every tenth event also goes to the slow receiver (which subscribes to report.*).
SLOW_EVERY = 10
# Every third event of each producer is keyed, on its `--lines` lines (ordering
# keys) in turn: the long run's 16 keep a line's rate (one event per ~20 s) well
# under what the flaky receiver serves one at a time; the short run's 2 give each
# line enough events to test their order.
KEYED_EVERY = 3
# Answers that say for sure the event was not stored (a 408, 425 or 429 may
# change on a retry; a 5xx or no answer leaves it unknown).
RETRYABLE_4XX = frozenset({408, 425, 429})


class Lines:
    """One producer's keyed streams: which events are keyed, to which line.

    A line's events are published one at a time, each only once the one before
    has a definite answer, so the order they were accepted in is their counters'.
    """

    def __init__(self, producer: int, count: int):
        self.names = [f"p{producer}-line{i}" for i in range(count)]
        self.accepted: Counter[str] = Counter()  # line -> its last counter
        self.retired: set[str] = set()  # an event of theirs has no definite answer
        self._events = 0
        self._turn = 0

    def pick(self) -> str | None:
        """The line of the producer's next event (None: unkeyed).

        Counted per producer: which thread takes which of the suite's numbers
        is up to the scheduler.
        """
        self._events += 1
        if self._events % KEYED_EVERY:
            return None
        self._turn += 1
        name = self.names[self._turn % len(self.names)]
        return None if name in self.retired else name


class Producers:
    """Threads that publish events at a steady rate, retrying until accepted."""

    PATIENCE = 180.0  # seconds a producer keeps retrying one event

    def __init__(self, *, web: Web, key: str, events: int, rate: float, lines: int):
        from .invariants import Published

        self.lines = lines
        self.web = web
        self.key = key
        self.total = events
        self.interval = 1.0 / rate
        self.published = Published()
        self.broker_down = threading.Event()
        self.done = threading.Event()
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._threads: list[threading.Thread] = []

    def start(self, count: int) -> None:
        self._started = time.monotonic()
        for index in range(count):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.done.set()

    def _next(self) -> tuple[int, str] | None:
        with self._lock:
            number = next(self._numbers)
            if number >= self.total:
                return None
        due = self._started + number * self.interval
        time.sleep(max(0.0, due - time.monotonic()))
        event_type = "report.slow" if number % SLOW_EVERY == 9 else "order.created"
        return number, event_type

    def _run(self, producer: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.key}"
        lines = Lines(producer, self.lines)
        while (item := self._next()) is not None:
            number, event_type = item
            line = lines.pick()
            if line is None:
                self._publish(session, number, event_type)
                continue
            counter = lines.accepted[line] + 1
            outcome = self._publish(
                session, number, event_type, line=line, counter=counter
            )
            if outcome == "accepted":
                lines.accepted[line] = counter
            elif outcome == "given_up":
                # It may still be accepted later: another event of this line
                # could then arrive before it.
                lines.retired.add(line)
            # rejected (a definite 4xx): not stored; the counter is used again.

    def _publish(
        self,
        session: requests.Session,
        number: int,
        event_type: str,
        *,
        line: str | None = None,
        counter: int = 0,
    ) -> str:
        """Publish one event: `accepted`, `rejected` (keyed only) or `given_up`.

        Every try sends the same key and body; only a 200/202 (or, for a keyed
        event, a definite 4xx) ends it before the patience runs out.
        """
        key = str(uuid.uuid4())
        body = {"event_type": event_type, "payload": {"n": number, "key": key}}
        if line is not None:
            body["ordering_key"] = line
            body["payload"].update(line=line, counter=counter)
        deadline = time.monotonic() + self.PATIENCE
        while time.monotonic() < deadline:
            broker_down = self.broker_down.is_set()
            try:
                response = session.post(
                    f"{self.web.url}/api/v1/events",
                    json=body,
                    headers={"Idempotency-Key": key},
                    timeout=15,
                )
            except (requests.ConnectionError, requests.Timeout):
                self._count(connection_errors=1)
                time.sleep(0.5)
                continue
            with self._lock:
                self.published.answers[response.status_code] += 1
            if response.status_code in (200, 202):
                data = response.json()
                with self._lock:
                    self.published.accepted[data["id"]] = data["deliveries"]
                    if broker_down and self.broker_down.is_set():
                        self.published.accepted_while_broker_down += 1
                    if line is not None:
                        self.published.keyed_accepted += 1
                return "accepted"
            if (
                line is not None
                and 400 <= response.status_code < 500
                and response.status_code not in RETRYABLE_4XX
            ):
                self._count(rejected=1)
                return "rejected"
            if response.status_code == 503:
                self._count(refused=1)
            elif response.status_code >= 500:
                self._count(server_errors=1)
            time.sleep(0.5)
        self._count(given_up=1)
        return "given_up"

    def _count(self, **fields: int) -> None:
        with self._lock:
            for name, value in fields.items():
                setattr(self.published, name, getattr(self.published, name) + value)
