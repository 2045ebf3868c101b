"""The engine's admission: claim a batch, ask flow control, dispatch what may go.

One thread takes what the inbox holds (deliveries/engine/inbox.py): messages to
admit, wake-ups of endpoints whose requests ended, recoveries. One statement
claims a batch, one Redis round trip asks the gate for all of it; what may go is
dispatched (deliveries/engine/send.py), what may not is parked in the lot for a
moment or postponed (deliveries/engine/refused.py), the rest settled at once.
"""

import logging
import math

from deliveries.engine.inbox import Job
from deliveries.engine.lot import Parked
from deliveries.outages import DATABASE_ERRORS, outage_delay, tend_connection
from deliveries.publisher import Message, PublishError, publisher
from deliveries.services.attempts import deliveries_admit, deliveries_enter_gate
from deliveries.services.scheduling import SKIPPED
from webhooks_project.queues import RETRIES_QUEUE

logger = logging.getLogger(__name__)

# A small batch waits this long (seconds) for more messages while the engine
# holds at least ADMIT_LINGER_BELOW others: the consumer hands messages over a
# turn of its event loop at a time, and turns shared with messages the engine
# settles without claiming (an endpoint refusing everything) leave batches of
# a few healthy deliveries, each paying a claim statement and a Redis round trip.
ADMIT_LINGER = 0.003
ADMIT_LINGER_BELOW = 48


class AdmitStage:
    """The admit thread's work (a part of DeliveryEngine)."""

    def _admit_loop(self) -> None:
        while True:
            intake = self._inbox.take(
                timeout=self._lot.next_check(), linger=self._linger
            )
            if intake.recovered:
                self._forget_refusals(intake.recovered)
            if intake.jobs:
                self._admit(intake.jobs)
            self._regate(self._lot.take(intake.woken))
            self._postpone(self._lot.clear() if self._stopping else self._lot.expired())

    def _linger(self, batch: int) -> float:
        """How long a batch of `batch` jobs waits for more before it is admitted.

        Only a small batch waits, while the engine holds a backlog of others:
        then messages keep coming, and one statement (and one Redis round trip)
        for more of them costs less per delivery. Under a light load every batch
        goes at once, so that waiting adds nothing to latency.
        """
        if 0 < batch < ADMIT_LINGER_BELOW <= self._busy - batch:
            return ADMIT_LINGER
        return 0.0

    def _park(self, item: Parked, *, front: bool = False) -> bool:
        return not self._stopping and self._lot.park(item, front=front)

    def _admit(self, jobs: list[Job]) -> None:
        tend_connection()
        jobs = self._postpone_refusing(jobs)
        if not jobs:
            return
        try:
            admission = deliveries_admit(delivery_ids=[job.delivery_id for job in jobs])
        except DATABASE_ERRORS as exc:
            logger.warning(
                "database unavailable, %d deliveries retried: %s", len(jobs), exc
            )
            self._retry_later(jobs)
            return
        except Exception:
            # A bug, not an outage: the rows' leases bring them back to the sweep.
            logger.exception("delivery engine: admitting %d deliveries", len(jobs))
            self._settle([(job, SKIPPED) for job in jobs])
            return
        waiting: dict[str, list[Job]] = {}
        for job in jobs:
            waiting.setdefault(job.delivery_id, []).append(job)
        for delivery in (
            *(attempt.delivery for attempt in admission.ready),
            *(delivery for delivery, _ in admission.refused),
        ):
            for job in waiting[str(delivery.pk)]:
                job.endpoint_id = str(delivery.endpoint_id)
        for attempt in admission.ready:
            self._dispatch(waiting[str(attempt.delivery.pk)].pop(0), attempt)
        refused = [
            Parked(
                job=waiting[str(d.pk)].pop(0), delivery=d, wait=g.wait, reason=g.reason
            )
            for d, g in admission.refused
        ]
        self._postpone([item for item in refused if not self._park(item)])
        settled = []
        for delivery_id, rest in waiting.items():
            decision = admission.settled.get(delivery_id, SKIPPED)
            for job in rest:
                settled.append((job, decision))
                decision = SKIPPED  # a repeated message of one delivery
        self._settle(settled)

    def _regate(self, items: list[Parked]) -> None:
        """Ask flow control again for parked deliveries."""
        if not items:
            return
        ready, refused = deliveries_enter_gate(
            deliveries=[item.delivery for item in items]
        )
        by_delivery = {id(item.delivery): item for item in items}
        for attempt in ready:
            self._dispatch(by_delivery[id(attempt.delivery)].job, attempt)
        later = []
        for delivery, answer in refused:
            item = by_delivery[id(delivery)]
            item.wait, item.reason = answer.wait, answer.reason
            if self._park(item, front=True):
                later += self._lot.trim(item)
            else:
                later.append(item)
        self._postpone(later)

    def _retry_later(self, jobs: list[Job]) -> None:
        """The database is away: the tasks again after `outage_delay`."""
        messages = [
            Message(
                job.delivery_id,
                job.endpoint_id,
                countdown=max(1, math.ceil(outage_delay(job.retries))),
                retries=job.retries + 1,
            )
            for job in jobs
        ]
        try:
            publisher().publish(messages, queue=RETRIES_QUEUE)
        except PublishError as exc:
            logger.warning("cannot retry %d deliveries later: %s", len(jobs), exc)
            for job in jobs:
                job.reject(True)
            self._done(len(jobs))
            return
        self._acks.put(jobs)
