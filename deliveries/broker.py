"""How many messages wait in the delivery queues, as RabbitMQ counts them."""

import logging
import time
from collections.abc import Iterable

import redis

from deliveries.flow import isolation
from webhooks_project import metrics
from webhooks_project.queues import (
    DELIVERIES_QUEUE,
    RETRIES_QUEUE,
    endpoint_queue_name,
)

logger = logging.getLogger(__name__)

DEPTH_QUEUES = (DELIVERIES_QUEUE, RETRIES_QUEUE)


def queue_backlog(endpoint_ids: Iterable = ()) -> int | None:
    """Ready messages in the delivery and retry queues (None if RabbitMQ is away).

    With endpoint queues on (deliveries/flow/isolation.py), the queues of
    `endpoint_ids` that were announced count too: the fresh deliveries of those
    endpoints may wait there. Also sets the queue-depth gauge (of the shared
    queues). Messages a worker holds unacknowledged and delayed retries are not
    counted: RabbitMQ reports ready ones only.
    """
    own = {str(e) for e in endpoint_ids} if isolation.enabled() else set()
    if own:
        announced = _announced()
        own = own if announced is None else own & announced
    depths = _depths(list(DEPTH_QUEUES) + [endpoint_queue_name(e) for e in own])
    if depths is None:
        return None
    for name in DEPTH_QUEUES:
        metrics.QUEUE_DEPTH.labels(queue=name.rsplit(".", 1)[-1]).set(depths[name])
    return sum(depths.values())


def endpoint_queues_backlog() -> int | None:
    """Ready messages in every endpoint queue announced lately, summed.

    Sets the gauge's `endpoints` series (one passive declaration per queue).
    """
    announced = _announced()
    if announced is None:
        return None
    depths = _depths([endpoint_queue_name(e) for e in announced])
    if depths is None:
        return None
    total = sum(depths.values())
    metrics.QUEUE_DEPTH.labels(queue="endpoints").set(total)
    return total


def _announced() -> set[str] | None:
    """The endpoints whose queues may exist (None if Redis cannot say)."""
    try:
        since = time.time() - isolation.ANNOUNCED_KEEP
        return set(isolation.announced_since(since))
    except redis.RedisError as exc:
        logger.warning("cannot list endpoint queues: %s", exc)
        return None


def _depths(names: list[str]) -> dict[str, int] | None:
    """Ready messages of each queue (0 for one that does not exist)."""
    from webhooks_project.celery import app

    depths = {}
    try:
        with app.connection_for_read() as conn:
            channel = conn.channel()
            try:
                for name in names:
                    try:
                        ok = channel.queue_declare(name, passive=True)
                    except conn.channel_errors:  # no such queue: it closed
                        channel = conn.channel()
                        depths[name] = 0
                    else:
                        depths[name] = ok.message_count
            finally:
                channel.close()
    except Exception as exc:  # noqa: BLE001 (any broker failure: depth unknown)
        logger.warning("cannot read queue depths: %s", exc)
        return None
    return depths
