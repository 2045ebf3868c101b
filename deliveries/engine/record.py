"""The engine's recording: flow control hears of each answer, PostgreSQL stores it.

The report thread tells the gate how requests ended as soon as they have (their
endpoints' slots free at once, parked deliveries of those endpoints are woken,
a successful probe reopens its endpoint); the record thread stores the attempts
in batches and hands them to settling.
"""

import logging
import queue
import time
from collections import Counter

from deliveries.engine.inbox import BATCH_MAX, Job
from deliveries.outages import DATABASE_ERRORS, outage_delay, tend_connection
from deliveries.services.attempts import Attempt, attempts_leave_gate, attempts_store
from deliveries.services.scheduling import SKIPPED, AttemptDecision

logger = logging.getLogger(__name__)

# Tries to record a batch while the database is away (outage_delay between).
RECORD_TRIES = 6


class RecordStage:
    """Reporting to flow control and recording attempts (a part of DeliveryEngine)."""

    def _report_loop(self) -> None:
        """Tell flow control how requests ended as soon as they have.

        Its own thread: an endpoint's slots are free once its answers are in,
        not once the recorder has written the batch before.
        """
        while True:
            items = drain(self._sent)
            attempts = [attempt for _, attempt in items]
            try:
                attempts_leave_gate(attempts=attempts)  # fails open without Redis
            except Exception:  # a bug: the slots expire with their lease
                logger.exception("delivery engine: reporting %d", len(attempts))
            recovered = {
                str(a.delivery.endpoint_id)
                for a in attempts
                if a.passed.probe and a.result is not None and a.result.succeeded
            }
            if recovered:
                self._inbox.put_recovered(recovered)
            if not self._lot.empty:  # read unlocked: the lot's timers cover a miss
                # Parked deliveries of those endpoints may go.
                self._inbox.put_woken(Counter(a.delivery.endpoint_id for a in attempts))
            self._reported.put(items)

    def _record_loop(self) -> None:
        while True:
            items = self._reported.get()
            while len(items) < BATCH_MAX:
                try:
                    items += self._reported.get_nowait()
                except queue.Empty:
                    break
            self._record(items)

    def _record(self, items: list[tuple[Job, Attempt]]) -> None:
        attempts = [attempt for _, attempt in items]
        try:
            decisions = self._record_with_backoff(attempts)
        except Exception:
            # The rows stay in_progress: their leases bring them back to the sweep.
            logger.exception("delivery engine: recording %d attempts", len(items))
            decisions = [SKIPPED] * len(items)
        self._settle([(job, d) for (job, _), d in zip(items, decisions, strict=True)])

    def _record_with_backoff(self, attempts: list[Attempt]) -> list[AttemptDecision]:
        """Record, trying again after `outage_delay` while the database is away.

        After RECORD_TRIES tries (one to two minutes) the last error goes up:
        the rows' leases and the sweep take over.
        """
        for tries in range(RECORD_TRIES):
            tend_connection()
            try:
                return attempts_store(attempts=attempts)
            except DATABASE_ERRORS as exc:
                wait = outage_delay(tries)
                logger.warning(
                    "database unavailable, recording %d attempts again in %.1f s: %s",
                    len(attempts),
                    wait,
                    exc,
                )
                time.sleep(wait)
        tend_connection()
        return attempts_store(attempts=attempts)


def drain(items: queue.SimpleQueue) -> list:
    """The next item, and as many more as are waiting (up to BATCH_MAX)."""
    found = [items.get()]
    while len(found) < BATCH_MAX:
        try:
            found.append(items.get_nowait())
        except queue.Empty:
            break
    return found
