"""Queue names, the RabbitMQ queues behind them and how tasks are routed to them."""

import os

from kombu import Exchange, Queue

# Lets test runs and several stacks share one RabbitMQ without sharing queues.
QUEUE_PREFIX = os.environ.get("WEBHOOK_QUEUE_PREFIX", "")

DELIVERIES_QUEUE = f"{QUEUE_PREFIX}webhooks.deliveries"
MAINTENANCE_QUEUE = f"{QUEUE_PREFIX}webhooks.maintenance"
# Retries and postponed deliveries, apart so a backlog of them never delays fresh
# deliveries (each queue has its own consumer and prefetch in every worker).
RETRIES_QUEUE = f"{QUEUE_PREFIX}webhooks.retries"

# A topic exchange lets Celery use RabbitMQ native delayed delivery for countdowns,
# so short retries wait in the broker rather than in a worker's prefetch.
_EXCHANGE = Exchange(f"{QUEUE_PREFIX}webhooks.tasks", type="topic", durable=True)
# Quorum queues are replicated and durable; Celery detects them and turns off
# global QoS, which they do not support.
_QUORUM = {"x-queue-type": "quorum"}

TASK_QUEUES = (
    Queue(
        DELIVERIES_QUEUE,
        _EXCHANGE,
        routing_key=DELIVERIES_QUEUE,
        durable=True,
        queue_arguments=_QUORUM,
    ),
    Queue(
        RETRIES_QUEUE,
        _EXCHANGE,
        routing_key=RETRIES_QUEUE,
        durable=True,
        queue_arguments=_QUORUM,
    ),
    Queue(
        MAINTENANCE_QUEUE,
        _EXCHANGE,
        routing_key=MAINTENANCE_QUEUE,
        durable=True,
        queue_arguments=_QUORUM,
    ),
)

TASK_ROUTES = {
    "deliveries.deliver": {"queue": DELIVERIES_QUEUE},
    "deliveries.*": {"queue": MAINTENANCE_QUEUE},
}
