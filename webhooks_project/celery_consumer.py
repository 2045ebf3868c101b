"""The workers' Celery consumer: Celery's, with delayed delivery set up per cluster.

Celery's DelayedDelivery step declares the native delayed-delivery exchanges and
queues, and binds the task queues to them, on every URL of a failover list, each
with retries (1, 3 and 5 s apart): it treats the URLs as separate brokers. With
a RabbitMQ cluster they are one broker, and each time the consumer restarts (its
connection lost when a node went down) the dead node's URL held consumption up
for 10-16 s in the cluster fault run. Here the step sets up through the node the
consumer is connected to: the exchanges, queues and bindings are the cluster's.
With one URL it is Celery's step as is.
"""

from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.consumer.delayed_delivery import DelayedDelivery

CELERY_STEP = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


class ClusterDelayedDelivery(DelayedDelivery):
    """Delayed delivery set up once, on the node of the consumer's connection."""

    def start(self, c) -> None:
        self._connected = c.connection.as_uri(include_password=True)
        super().start(c)

    def _validate_broker_urls(self, broker_urls) -> set[str]:
        return super()._validate_broker_urls(self._connected)


class Consumer(CeleryConsumer):
    """Celery's consumer with ClusterDelayedDelivery in place of its own step."""

    class Blueprint(CeleryConsumer.Blueprint):
        default_steps = [
            f"{__name__}:ClusterDelayedDelivery" if step == CELERY_STEP else step
            for step in CeleryConsumer.Blueprint.default_steps
        ]
