"""How many messages wait in the delivery queues, as RabbitMQ counts them."""

import logging

from webhooks_project import metrics
from webhooks_project.queues import DELIVERIES_QUEUE, RETRIES_QUEUE

logger = logging.getLogger(__name__)

DEPTH_QUEUES = (DELIVERIES_QUEUE, RETRIES_QUEUE)


def queue_backlog() -> int | None:
    """Ready messages in the delivery and retry queues (None if RabbitMQ is away).

    Also sets the queue-depth gauge. Messages a worker holds unacknowledged and
    delayed retries are not counted: RabbitMQ reports ready ones only.
    """
    from webhooks_project.celery import app

    try:
        with app.connection_for_read() as conn:
            channel = conn.channel()
            try:
                depths = {
                    name: channel.queue_declare(name, passive=True).message_count
                    for name in DEPTH_QUEUES
                }
            finally:
                channel.close()
    except Exception as exc:  # noqa: BLE001 (any broker failure: depth unknown)
        logger.warning("cannot read queue depths: %s", exc)
        return None
    for name, depth in depths.items():
        metrics.QUEUE_DEPTH.labels(queue=name.rsplit(".", 1)[-1]).set(depth)
    return sum(depths.values())
