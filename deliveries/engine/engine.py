"""The delivery engine of one threads-pool worker process: its threads and queues.

Threads: the admit thread (deliveries/engine/admit.py, with the lot and the
refused deliveries of deliveries/engine/refused.py), the worker's pool (signing
and checking, deliveries/engine/send.py), the sender's event loop (every request
in flight), the report and record threads (deliveries/engine/record.py) and the
ack thread (deliveries/engine/settle.py). The admit and record threads each have
a database connection of their own. Between them:

    consumer --submit--> inbox --admit--> pool --send--> sender
    sender --sent--> report --reported--> record --settle--> acks --> consumer
"""

import queue
import threading
import time

from django.conf import settings

from deliveries import transport
from deliveries.engine.admit import AdmitStage
from deliveries.engine.inbox import Inbox, Job
from deliveries.engine.lot import Lot
from deliveries.engine.record import RecordStage
from deliveries.engine.refused import RefusedStage
from deliveries.engine.send import SendStage
from deliveries.engine.settle import SettleStage


class DeliveryEngine(AdmitStage, RefusedStage, SendStage, RecordStage, SettleStage):
    """Admit, send and record deliveries for one worker process."""

    def __init__(self, *, pool) -> None:
        self.pool = pool
        self._inbox = Inbox()
        self._sent: queue.SimpleQueue = queue.SimpleQueue()  # (job, attempt) sent
        self._reported: queue.SimpleQueue = queue.SimpleQueue()  # reported to the gate
        self._acks: queue.SimpleQueue = queue.SimpleQueue()  # jobs settled
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
        self._inbox.put_jobs(jobs)

    def stop(self, timeout: float) -> bool:
        """Wait until every job taken is settled (at most `timeout` s).

        Parked deliveries are postponed at once. Returns whether the engine
        drained in time; jobs left unsettled are not acknowledged, so RabbitMQ
        delivers them again. The engine's threads end with the process.
        """
        deadline = time.monotonic() + timeout
        with self._idle:
            self._stopping = True
        self._inbox.stop()
        with self._idle:
            while self._busy and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))
            return self._busy == 0

    def _done(self, count: int) -> None:
        with self._idle:
            self._busy -= count
            if not self._busy:
                self._idle.notify_all()
