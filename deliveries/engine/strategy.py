"""The Celery strategy of `deliveries.deliver`: hand messages to the engine in batches.

Celery calls a task's strategy for every message of that task the consumer
receives. This one collects the delivery ids of the messages that arrive in one
turn of the consumer's event loop and gives them to the engine at the end of the
turn. Pools other than threads (prefork, solo, gevent) keep Celery's default
strategy: one task invocation per message.
"""

import functools
import logging
import threading
import uuid

from celery import bootsteps
from celery.concurrency.thread import TaskPool as ThreadPool
from celery.worker import state
from celery.worker.strategy import default as default_strategy
from django.conf import settings

from deliveries.engine.engine import DeliveryEngine
from deliveries.engine.inbox import BATCH_MAX, Job

logger = logging.getLogger(__name__)

_engine: DeliveryEngine | None = None
_lock = threading.Lock()


def engine_for(pool) -> DeliveryEngine:
    """This worker process's engine, started on first use."""
    global _engine
    with _lock:
        if _engine is None or _engine.pool is not pool:
            _engine = DeliveryEngine(pool=pool)
        return _engine


def delivery_strategy(task, app, consumer, **kwargs):
    """The message handler Celery calls for each `deliveries.deliver` message."""
    if not isinstance(consumer.pool, ThreadPool):
        return default_strategy(task, app, consumer, **kwargs)
    engine = engine_for(consumer.pool)
    hub = consumer.hub
    errors = consumer.connection_errors
    pending: list[Job] = []

    def flush() -> None:
        if pending:
            jobs = pending[:]
            pending.clear()
            engine.submit(jobs)

    def handler(message, body, ack, reject, callbacks, **_) -> None:
        try:
            payload = body if body is not None else message.decode()
            if isinstance(payload, dict):  # task protocol 1
                args, kwargs = payload["args"], payload.get("kwargs") or {}
            else:
                args, kwargs = payload[0], payload[1] or {}
            # A delivery id that is no UUID would fail the whole batch's claim.
            delivery_id = str(uuid.UUID(str(args[0])))
            endpoint_id = kwargs.get("endpoint_id")
        except Exception:  # a message no worker could run
            logger.exception("undecodable deliveries.deliver message dropped")
            ack(logger, errors)
            return
        pending.append(
            Job(
                delivery_id=delivery_id,
                # Celery's promises run the (n)ack on the event loop's thread.
                ack=functools.partial(ack, logger, errors),
                reject=functools.partial(reject, logger, errors),
                retries=(message.headers or {}).get("retries") or 0,
                endpoint_id=str(endpoint_id) if endpoint_id else None,
            )
        )
        state.total_count[task.name] += 1
        state.all_total_count[0] += 1
        if hub is None or len(pending) >= BATCH_MAX:
            flush()
        elif len(pending) == 1:
            hub.call_soon(flush)

    return handler


class DeliveryEngineStep(bootsteps.StartStopStep):
    """Worker bootstep: on shutdown, finish what the engine holds before the pool.

    It starts after the pool and so stops before it, after the consumer stopped
    taking messages: attempts in flight are finished and recorded, and their
    acknowledgements flushed, before the connection closes.
    """

    requires = ("celery.worker.components:Pool",)

    def stop(self, worker) -> None:
        """Warm shutdown: wait for the engine to settle what it took."""
        self._stop(
            settings.WEBHOOK_CONNECT_TIMEOUT + settings.WEBHOOK_RESPONSE_TIMEOUT + 5
        )

    def terminate(self, worker) -> None:
        """Cold shutdown: do not wait; unsettled messages are delivered again."""
        self._stop(0)

    def _stop(self, timeout: float) -> None:
        with _lock:
            engine = _engine
        if engine is not None and not engine.stop(timeout):
            logger.warning("delivery engine stopped with deliveries unsettled")
