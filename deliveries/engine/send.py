"""The engine's sending: sign, check the destination, hand the request over.

A pool thread signs and checks each admitted attempt (after its name's lookup,
which no pool thread waits for), then hands the request to the process's
sender, whose event loop holds every request in flight
(deliveries.transport.Sender); what comes back goes to the report thread.
"""

import functools
import logging
import time
from collections import Counter

from deliveries import transport
from deliveries.engine.inbox import Job
from deliveries.services.attempts import Attempt, attempt_request, attempts_leave_gate
from deliveries.services.scheduling import SKIPPED

logger = logging.getLogger(__name__)


class SendStage:
    """The sending of admitted attempts (a part of DeliveryEngine)."""

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

    def _send(self, job: Job, attempt: Attempt, looked_up=None, started=None) -> None:
        """Sign, check the destination, and hand the request to the sender."""
        try:
            prepared = attempt_request(attempt, looked_up=looked_up, started=started)
        except Exception:
            logger.exception("delivery engine: sending %s", job.delivery_id)
            attempts_leave_gate(attempts=[attempt])  # frees the endpoint's slot
            self._settle([(job, SKIPPED)])  # the lease brings it back
            self._inbox.put_woken(Counter({attempt.delivery.endpoint_id: 1}))
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
