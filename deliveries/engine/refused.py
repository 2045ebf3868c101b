"""What the engine does with deliveries flow control refused.

A busy endpoint's overflow (at its in-flight cap, out of tokens) waits in the
lot for a moment, or is postponed behind what the lot holds for it; an endpoint
that refuses every delivery has its deliveries postponed, unclaimed when the
refusal is known before the claim (deliveries.flow.refusals), and its own queue
paused meanwhile (deliveries.flow.worker_queues), isolating it.
"""

import logging
import time
from collections import Counter
from datetime import timedelta

import redis
from django.utils import timezone

from deliveries.engine.inbox import Job
from deliveries.engine.lot import Parked
from deliveries.flow import gate, isolation, refusals, worker_queues
from deliveries.outages import DATABASE_ERRORS, tend_connection
from deliveries.services.postponing import (
    deliveries_postpone,
    deliveries_postpone_queued,
    deliveries_postpone_unclaimed,
)
from deliveries.services.scheduling import BUSY_REASONS, SKIPPED

logger = logging.getLogger(__name__)

# Longest a worker keeps an endpoint's queue paused at a time: it asks again.
PAUSE_MAX_SECONDS = 30.0
# Shortest wait of a busy endpoint's overflow for which its own queue is paused.
QUEUE_PAUSE_MIN = 1.0


class RefusedStage:
    """Postponing and pausing for refused deliveries (a part of DeliveryEngine)."""

    def _postpone_refusing(self, jobs: list[Job]) -> list[Job]:
        """Put off, unclaimed, the jobs of endpoints that refuse for now; the rest.

        A hanging endpoint's backlog would otherwise be claimed, refused and
        postponed one by one (two row updates and the joins each): here one
        statement moves its rows' due time and lease on, and the sweep brings
        them back then. Its queue is paused meanwhile, as after a refusal met
        here.
        """
        refusing = refusals.refusing()
        if not refusing:
            return jobs
        held: dict[str, list[Job]] = {}
        rest = []
        for job in jobs:
            if job.endpoint_id in refusing:
                held.setdefault(job.endpoint_id, []).append(job)
            else:
                rest.append(job)
        if held:
            now, wall = time.monotonic(), timezone.now()
            pauses = {
                endpoint_id: now
                + min((refusing[endpoint_id] - wall).total_seconds(), PAUSE_MAX_SECONDS)
                for endpoint_id in held
            }
            try:
                self._pause_endpoint_queues(pauses)
            except DATABASE_ERRORS as exc:  # the leases cover what it would move
                logger.warning("database unavailable, queues not paused: %s", exc)
        for endpoint_id, endpoint_jobs in held.items():
            try:
                deliveries_postpone_unclaimed(
                    delivery_ids=[job.delivery_id for job in endpoint_jobs],
                    due=refusing[endpoint_id],
                    reason="held",
                )
            except DATABASE_ERRORS as exc:
                logger.warning(
                    "database unavailable, %d not postponed: %s", len(jobs), exc
                )
                self._retry_later(endpoint_jobs)
                continue
            self._settle([(job, SKIPPED) for job in endpoint_jobs])
        return rest

    def _postpone(self, items: list[Parked]) -> None:
        """Put deliveries off the ordinary way: in the database and the broker."""
        if not items:
            return
        items = items + self._unpark_refusing(items)
        now, wall = time.monotonic(), timezone.now()
        ahead: Counter = Counter()
        # Endpoints whose own queue waits meanwhile, until when (monotonic).
        paused: dict[str, float] = {}
        for item in items:
            if item.reason in BUSY_REASONS:  # the overflow of a busy endpoint
                # In line behind what the lot holds for that endpoint and the
                # overflow before it: back about when the endpoint can take it,
                # rather than cycling through the broker every second.
                endpoint_id = item.delivery.endpoint_id
                line = self._lot.waiting(endpoint_id) + ahead[endpoint_id]
                ahead[endpoint_id] += 1
                item.wait += line * self._lot.turnover(item)
                # Busy, not refusing: its next deliveries are claimed. Its queue
                # keeps the rest until about when it has room (not for a moment:
                # each pause costs a consumer's cancel and its renewal).
                if item.wait >= QUEUE_PAUSE_MIN:
                    until = now + min(item.wait, PAUSE_MAX_SECONDS)
                    key = str(endpoint_id)
                    paused[key] = max(until, paused.get(key, 0.0))
                continue
            if item.reason == gate.UNMETERED:  # this worker cannot reach Redis
                continue
            # Refusing every delivery: what follows is postponed unclaimed.
            endpoint_id = str(item.delivery.endpoint_id)
            refusals.note_refusal(endpoint_id, wall + timedelta(seconds=item.wait))
            until = now + min(item.wait, PAUSE_MAX_SECONDS)
            paused[endpoint_id] = max(until, paused.get(endpoint_id, 0.0))
        try:
            tend_connection()
            decisions = deliveries_postpone(
                items=[(item.delivery, item.wait, item.reason) for item in items]
            )
            self._pause_endpoint_queues(paused)
        except DATABASE_ERRORS as exc:
            logger.warning(
                "database unavailable, %d postponements: %s", len(items), exc
            )
            self._retry_later([item.job for item in items])
            return
        self._settle(
            [(item.job, d) for item, d in zip(items, decisions, strict=True)],
            again=True,
        )

    def _pause_endpoint_queues(self, paused: dict[str, float]) -> None:
        """Stop reading the endpoints' own queues until when they may take more.

        For endpoints refusing every delivery, and for busy ones whose overflow
        could not wait in the lot: what follows waits in RabbitMQ rather than
        being received and postponed. Their queued deliveries' leases that would
        pass before this worker (or another) reads the queue again are moved on,
        so that the sweep does not publish them twice. An endpoint without a
        queue of its own gets one: it is isolated (its fresh deliveries go to
        its queue) until a while after the pause. A pause already asked for
        until then or later is not asked (nor its leases moved) again.
        """
        if not paused or not isolation.enabled():
            return
        now, wall = time.monotonic(), time.time()
        self._paused = {e: u for e, u in self._paused.items() if u > now}
        queues = worker_queues.queues()
        isolate = {}
        for endpoint_id, until in paused.items():
            if until <= self._paused.get(endpoint_id, 0.0):
                continue
            self._paused[endpoint_id] = until
            queues.pause(endpoint_id, until)
            deliveries_postpone_queued(
                endpoint_id=endpoint_id, within=2 * PAUSE_MAX_SECONDS
            )
            isolate[endpoint_id] = wall + until - now + isolation.ISOLATE_LINGER
        if isolate:
            try:
                isolation.isolate(isolate)
            except redis.RedisError as exc:
                logger.warning("endpoints not isolated (Redis): %s", exc)

    def _forget_refusals(self, endpoint_ids) -> None:
        """Endpoints whose probe succeeded take deliveries again at once.

        Their queues are read again, and their isolation ends, whichever worker
        isolated them: their fresh deliveries go back to the shared queue.
        """
        refusals.note_recovered(endpoint_ids)
        if not isolation.enabled():
            return
        for endpoint_id in endpoint_ids:
            self._paused.pop(endpoint_id, None)
            worker_queues.queues().resume(endpoint_id)
        try:
            isolation.release(endpoint_ids)
        except redis.RedisError as exc:
            logger.warning("endpoints not released (Redis): %s", exc)

    def _unpark_refusing(self, items: list[Parked]) -> list[Parked]:
        """What the lot holds of endpoints that now refuse every delivery.

        Parked behind an endpoint's cap, they would otherwise be asked about
        again one at a time; they are postponed with the refusal that came.
        """
        unparked = []
        for item in items:
            if item.reason in BUSY_REASONS:
                continue
            for parked in self._lot.release(item.delivery.endpoint_id):
                parked.wait, parked.reason = item.wait, item.reason
                unparked.append(parked)
        return unparked
