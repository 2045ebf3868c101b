"""The engine's settling: short retries back through the broker, then the acks.

Acknowledgements go through the promise Celery gave with each message, which
runs it on the consumer's event loop; the ack thread hands them over in bursts
(ACK_WINDOW).
"""

import contextlib
import logging
import math
import queue
import time

from deliveries.engine.inbox import BATCH_MAX, Job
from deliveries.outages import DATABASE_ERRORS
from deliveries.publisher import Message, PublishError, publisher
from deliveries.services.enqueue import deliveries_left_to_sweep
from deliveries.services.scheduling import AttemptDecision
from webhooks_project.queues import RETRIES_QUEUE

logger = logging.getLogger(__name__)

# Acknowledgements are held this long (seconds) and sent together: on a quorum
# queue, RabbitMQ spends several times more CPU per message on acks one at a
# time than on a burst of them.
ACK_WINDOW = 0.01


class SettleStage:
    """Settling jobs: retries published, messages acknowledged (part of the engine)."""

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
                with contextlib.suppress(*DATABASE_ERRORS):  # else their leases pass
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
