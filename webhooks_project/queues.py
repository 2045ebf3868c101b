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


def _routing_key(name: str) -> str:
    """A shared queue's routing key: its name, the prefix last.

    Celery binds every queue to RabbitMQ's delayed-delivery exchanges, which
    all stacks on one RabbitMQ share, with `#.<routing key>`. Were the prefix
    first, an unprefixed stack's `#.webhooks.retries` would also match a
    prefixed one's `test.webhooks.retries`, and its queue would receive the
    other stack's delayed retries.
    """
    base = name.removeprefix(QUEUE_PREFIX)
    tag = QUEUE_PREFIX.strip(".")
    return f"{base}.{tag}" if tag else base


TASK_QUEUES = tuple(
    Queue(
        name,
        _EXCHANGE,
        routing_key=_routing_key(name),
        durable=True,
        queue_arguments=_QUORUM,
    )
    for name in (DELIVERIES_QUEUE, RETRIES_QUEUE, MAINTENANCE_QUEUE)
)

TASK_ROUTES = {
    "deliveries.deliver": {"queue": DELIVERIES_QUEUE},
    "deliveries.*": {"queue": MAINTENANCE_QUEUE},
}

# A queue of its own for each endpoint's fresh deliveries (WEBHOOK_ENDPOINT_QUEUES,
# deliveries/flow/isolation.py): a worker stops consuming one while its endpoint
# refuses deliveries, and the endpoint's backlog waits in RabbitMQ, out of the
# way of everyone else's. Retries keep the shared RETRIES_QUEUE.
ENDPOINT_QUEUE_PREFIX = f"{QUEUE_PREFIX}webhooks.endpoint."
# RabbitMQ deletes an endpoint's queue after this long without a consumer or a
# declaration (milliseconds). Part of the queue's identity: a declaration with
# another value fails (PRECONDITION_FAILED), so changing it means new names.
ENDPOINT_QUEUE_EXPIRES_MS = 3_600_000


def endpoint_queue_name(endpoint_id) -> str:
    """The name (and routing key) of an endpoint's queue."""
    return f"{ENDPOINT_QUEUE_PREFIX}{endpoint_id}"


def endpoint_queue(endpoint_id) -> Queue:
    """The quorum queue of one endpoint's fresh deliveries."""
    name = endpoint_queue_name(endpoint_id)
    return Queue(
        name,
        _EXCHANGE,
        routing_key=name,
        durable=True,
        queue_arguments={**_QUORUM, "x-expires": ENDPOINT_QUEUE_EXPIRES_MS},
    )
