"""The engine's pipeline: admit a batch, send each attempt, record what came back.

Threads: one admitter and one recorder (each with its own database connection),
one reporter (flow control hears of each answer at once, in batches), one acker,
and the sender's event loop, which holds every
request in flight (deliveries.transport.Sender); the worker's pool signs and
checks the requests to endpoint names once their lookup is done (each runs on a
thread of deliveries.resolver, and no pool thread waits for one).
Acknowledgements go through the promise Celery gave with each message, which
runs it on the consumer's event loop; the acker hands them over in bursts
(ACK_WINDOW).
"""

import contextlib
import functools
import logging
import math
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.conf import settings
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)
from django.utils import timezone

from deliveries import transport
from deliveries.engine.lot import Lot, Parked
from deliveries.flow import isolation, refusals, worker_queues
from deliveries.publisher import Message, PublishError, publisher
from deliveries.services.attempts import (
    Attempt,
    attempt_request,
    attempts_record,
    attempts_report,
    deliveries_admit,
    deliveries_gate,
)
from deliveries.services.enqueue import deliveries_left_to_sweep
from deliveries.services.postponing import (
    deliveries_postpone,
    deliveries_postpone_queued,
    deliveries_postpone_unclaimed,
)
from deliveries.services.scheduling import BUSY_REASONS, SKIPPED, AttemptDecision
from webhooks_project.queues import RETRIES_QUEUE

logger = logging.getLogger(__name__)

# Database outages: what Celery's autoretry retries the task body for.
INFRA_ERRORS = (OperationalError, InterfaceError)
# Most deliveries one statement claims or records.
BATCH_MAX = 200
# Waits between tries to record attempts while the database is away (seconds):
# about a minute in all, then the lease and the sweep take over.
RECORD_BACKOFF = (0.5, 1, 2, 4, 8, 15, 30)
# Longest countdown of a task retried because the database was away.
ADMIT_BACKOFF_MAX = 60
# Longest a worker keeps an endpoint's queue paused at a time: it asks again.
PAUSE_MAX_SECONDS = 30.0
# Shortest wait of a busy endpoint's overflow for which its own queue is paused.
QUEUE_PAUSE_MIN = 1.0
# Acknowledgements are held this long (seconds) and sent together: a quorum
# queue's acks cost RabbitMQ several times more CPU per message one at a time
# than in a burst (BENCHMARKS.md, change 9).
ACK_WINDOW = 0.01
# A small batch waits this long (seconds) for more messages while the engine
# holds at least ADMIT_LINGER_BELOW others: the consumer hands messages over a
# turn of its event loop at a time, and turns shared with messages the engine
# settles without claiming (an endpoint refusing everything) leave batches of
# a few healthy deliveries, each paying a statement (BENCHMARKS.md, change 16).
ADMIT_LINGER = 0.003
ADMIT_LINGER_BELOW = 48
_STOP = object()


@dataclass
class Job:
    """One `deliveries.deliver` message: the delivery and how to settle it."""

    delivery_id: str
    ack: Callable[[], object]
    reject: Callable[[bool], object]  # requeue?
    retries: int = 0
    endpoint_id: str | None = None  # the publisher's hint, when it gave one


class Recovered(frozenset):
    """Endpoints whose circuit a probe just closed (report loop to admit loop)."""


class DeliveryEngine:
    """Admit, send and record deliveries for one worker process."""

    def __init__(self, *, pool) -> None:
        self.pool = pool
        self._intake: queue.SimpleQueue = queue.SimpleQueue()
        self._sent: queue.SimpleQueue = queue.SimpleQueue()
        self._reported: queue.SimpleQueue = queue.SimpleQueue()
        self._acks: queue.SimpleQueue = queue.SimpleQueue()
        self._lot = Lot(
            per_endpoint=settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT or 100,
            lane_max=pool.limit * settings.CELERY_WORKER_PREFETCH_MULTIPLIER,
        )
        # Endpoint queues this engine asked to pause, until when (monotonic).
        self._paused: dict[str, float] = {}
        self._sender = transport.Sender()
        self._busy = 0  # jobs taken and not settled yet
        self._idle = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._admit_loop, name="delivery-admit"),
            threading.Thread(target=self._report_loop, name="delivery-report"),
            threading.Thread(target=self._record_loop, name="delivery-record"),
            threading.Thread(target=self._ack_loop, name="delivery-ack"),
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def submit(self, jobs: list[Job]) -> None:
        """Take messages received by the consumer (from its event loop)."""
        if not jobs:
            return
        with self._idle:
            if self._stopping:
                # Not acknowledged: RabbitMQ gives them to another consumer.
                return
            self._busy += len(jobs)
        self._intake.put(jobs)

    def stop(self, timeout: float) -> bool:
        """Wait until every job taken is settled (at most `timeout` s).

        Parked deliveries are postponed at once. Returns whether the engine
        drained in time; jobs left unsettled are not acknowledged, so RabbitMQ
        delivers them again. The engine's threads end with the process.
        """
        deadline = time.monotonic() + timeout
        with self._idle:
            self._stopping = True
        self._intake.put(_STOP)
        with self._idle:
            while self._busy and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))
            return self._busy == 0

    # --- admit ------------------------------------------------------------

    def _admit_loop(self) -> None:
        while True:
            try:
                item = self._intake.get(timeout=self._lot.next_check())
            except queue.Empty:
                item = Counter()
            jobs: list[Job] = []
            woken: Counter = Counter()
            lingered = False
            while True:
                if isinstance(item, Counter):
                    woken.update(item)
                elif isinstance(item, Recovered):
                    self._forget_refusals(item)
                elif item is not _STOP:
                    jobs.extend(item)
                if len(jobs) >= BATCH_MAX:
                    break
                try:
                    item = self._intake.get_nowait()
                except queue.Empty:
                    item = None if lingered else self._linger(len(jobs))
                    lingered = True
                    if item is None:
                        break
            if jobs:
                self._admit(jobs)
            self._regate(self._lot.take(woken))
            self._postpone(self._lot.clear() if self._stopping else self._lot.expired())

    def _linger(self, batch: int) -> object | None:
        """What arrives within ADMIT_LINGER before a batch of `batch` is admitted.

        Only a small batch waits, while the engine holds a backlog of others:
        then messages keep coming, and one statement (and one Redis round trip)
        for more of them costs less per delivery. Under a light load every batch
        goes at once (None), so that waiting adds nothing to latency.
        """
        if not 0 < batch < ADMIT_LINGER_BELOW <= self._busy - batch:
            return None
        try:
            return self._intake.get(timeout=ADMIT_LINGER)
        except queue.Empty:
            return None

    def _park(self, item: Parked, *, front: bool = False) -> bool:
        return not self._stopping and self._lot.park(item, front=front)

    def _admit(self, jobs: list[Job]) -> None:
        _tend_connection()
        jobs = self._postpone_refusing(jobs)
        if not jobs:
            return
        try:
            admission = deliveries_admit(delivery_ids=[job.delivery_id for job in jobs])
        except INFRA_ERRORS as exc:
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
            except INFRA_ERRORS as exc:  # the leases cover what it would move
                logger.warning("database unavailable, queues not paused: %s", exc)
        for endpoint_id, endpoint_jobs in held.items():
            try:
                deliveries_postpone_unclaimed(
                    delivery_ids=[job.delivery_id for job in endpoint_jobs],
                    due=refusing[endpoint_id],
                    reason="held",
                )
            except INFRA_ERRORS as exc:
                logger.warning(
                    "database unavailable, %d not postponed: %s", len(jobs), exc
                )
                self._retry_later(endpoint_jobs)
                continue
            self._settle([(job, SKIPPED) for job in endpoint_jobs])
        return rest

    def _regate(self, items: list[Parked]) -> None:
        """Ask flow control again for parked deliveries."""
        if not items:
            return
        ready, refused = deliveries_gate(deliveries=[item.delivery for item in items])
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
            # Refusing every delivery: what follows is postponed unclaimed.
            endpoint_id = str(item.delivery.endpoint_id)
            refusals.note_refusal(endpoint_id, wall + timedelta(seconds=item.wait))
            until = now + min(item.wait, PAUSE_MAX_SECONDS)
            paused[endpoint_id] = max(until, paused.get(endpoint_id, 0.0))
        try:
            _tend_connection()
            decisions = deliveries_postpone(
                items=[(item.delivery, item.wait, item.reason) for item in items]
            )
            self._pause_endpoint_queues(paused)
        except INFRA_ERRORS as exc:
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

    def _forget_refusals(self, endpoint_ids: "Recovered") -> None:
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

    def _retry_later(self, jobs: list[Job]) -> None:
        """As Celery's autoretry: the tasks again later, with backoff and jitter."""
        messages = []
        for job in jobs:
            countdown = min(ADMIT_BACKOFF_MAX, 2 ** (job.retries + 1))
            jitter = random.uniform(0.5, 1.0)  # noqa: S311 (not a secret)
            messages.append(
                Message(
                    job.delivery_id,
                    job.endpoint_id,
                    countdown=max(1, math.ceil(countdown * jitter)),
                    retries=job.retries + 1,
                )
            )
        try:
            publisher().publish(messages, queue=RETRIES_QUEUE)
        except PublishError as exc:
            logger.warning("cannot retry %d deliveries later: %s", len(jobs), exc)
            for job in jobs:
                job.reject(True)
            self._done(len(jobs))
            return
        self._acks.put(jobs)

    def _dispatch(self, job: Job, attempt: Attempt) -> None:
        started = time.monotonic()
        delivery = attempt.delivery
        looked_up = transport.lookup_started(
            delivery.endpoint.url, owner=str(delivery.tenant_id)
        )
        if looked_up is None:  # an address: nothing to wait for
            self._send(job, attempt)
        else:
            # No thread waits for the name (a lookup that hangs ends at the
            # connect timeout); a pool thread signs and sends once it is done.
            looked_up.add_done_callback(
                lambda done: self.pool.apply_async(
                    self._send, (job, attempt, done, started)
                )
            )

    # --- send -------------------------------------------------------------

    def _send(self, job: Job, attempt: Attempt, looked_up=None, started=None) -> None:
        """Sign, check the destination, and hand the request to the sender."""
        try:
            prepared = attempt_request(attempt, looked_up=looked_up, started=started)
        except Exception:
            logger.exception("delivery engine: sending %s", job.delivery_id)
            attempts_report(attempts=[attempt])  # frees the endpoint's slot
            self._settle([(job, SKIPPED)])  # the lease brings it back
            self._intake.put(Counter({attempt.delivery.endpoint_id: 1}))
            return
        if isinstance(prepared, transport.TransportResult):
            self._sent_back(job, attempt, prepared)  # refused or unresolvable
        else:
            self._sender.submit(
                prepared, functools.partial(self._sent_back, job, attempt)
            )

    def _sent_back(self, job: Job, attempt: Attempt, result) -> None:
        attempt.result = result
        self._sent.put((job, attempt))

    # --- record -----------------------------------------------------------

    def _report_loop(self) -> None:
        """Tell flow control how requests ended as soon as they have.

        Its own thread: an endpoint's slots are free once its answers are in,
        not once the recorder has written the batch before.
        """
        while True:
            items = _drain(self._sent)
            attempts = [attempt for _, attempt in items]
            try:
                attempts_report(attempts=attempts)  # fails open without Redis
            except Exception:  # a bug: the slots expire with their lease
                logger.exception("delivery engine: reporting %d", len(attempts))
            recovered = Recovered(
                str(a.delivery.endpoint_id)
                for a in attempts
                if a.passed.probe and a.result is not None and a.result.succeeded
            )
            if recovered:
                self._intake.put(recovered)
            if not self._lot.empty:  # read unlocked: the lot's timers cover a miss
                # Parked deliveries of those endpoints may go.
                self._intake.put(Counter(a.delivery.endpoint_id for a in attempts))
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
        for wait in RECORD_BACKOFF:
            _tend_connection()
            try:
                return attempts_record(attempts=attempts)
            except INFRA_ERRORS as exc:
                logger.warning(
                    "database unavailable, recording %d attempts again in %g s: %s",
                    len(attempts),
                    wait,
                    exc,
                )
                time.sleep(wait)
        _tend_connection()
        return attempts_record(attempts=attempts)

    # --- settle -----------------------------------------------------------

    def _settle(
        self, settled: list[tuple[Job, AttemptDecision]], *, again: bool = False
    ) -> None:
        """Send short retries through the broker, then acknowledge the messages.

        `again`: postponements, whose messages count how often they were postponed.
        """
        if not settled:
            return
        later = [
            Message(
                job.delivery_id,
                job.endpoint_id,
                countdown=max(1, math.ceil(decision.retry_in)),
                retries=job.retries + 1 if again else 0,
            )
            for job, decision in settled
            if decision.retry_in is not None
        ]
        if later:
            try:
                # Native delayed delivery counts whole seconds, at least one;
                # retries and postponements have their own queue so that they
                # never delay fresh deliveries.
                publisher().publish(later, queue=RETRIES_QUEUE)
            except PublishError as exc:
                logger.warning("%d retries left to the sweep: %s", len(later), exc)
                with contextlib.suppress(*INFRA_ERRORS):  # else their leases pass
                    deliveries_left_to_sweep([m.delivery_id for m in later])
        self._acks.put([job for job, _ in settled])

    def _ack_loop(self) -> None:
        """Acknowledge settled messages in bursts, at most ACK_WINDOW late.

        A settled job counts as done only once its ack is handed over, so a
        stopping engine waits for these too.
        """
        while True:
            jobs = self._acks.get()
            deadline = time.monotonic() + ACK_WINDOW
            while (wait := deadline - time.monotonic()) > 0 and len(jobs) < BATCH_MAX:
                try:
                    jobs += self._acks.get(timeout=wait)
                except queue.Empty:
                    break
            for job in jobs:
                job.ack()
            self._done(len(jobs))

    def _done(self, count: int) -> None:
        with self._idle:
            self._busy -= count
            if not self._busy:
                self._idle.notify_all()


def _drain(items: queue.SimpleQueue) -> list:
    """The next item, and as many more as are waiting (up to BATCH_MAX)."""
    found = [items.get()]
    while len(found) < BATCH_MAX:
        try:
            found.append(items.get_nowait())
        except queue.Empty:
            break
    return found


_tended = threading.local()
# How often an engine thread looks at its database connection (seconds).
TEND_INTERVAL = 1.0


def _tend_connection() -> None:
    """Drop this thread's connection if broken or past CONN_MAX_AGE.

    What Django does around each web request, but at most once a second: its
    health check is a round trip of its own, which every batch would pay. A
    connection that failed is dropped at once.
    """
    now = time.monotonic()
    if connection.errors_occurred or now - getattr(_tended, "at", 0.0) >= TEND_INTERVAL:
        _tended.at = now
        close_old_connections()
