"""A no-op Celery task: the engine's ceiling for the delivery benchmark.

Loaded only by benchmark workers (`celery worker --include bench.tasks`). It counts
itself with one Redis INCR so the harness can see the queue drain (there is no
result backend); that one round trip is the whole body.
"""

from celery import shared_task

from webhooks_project.redis_client import get_redis

COUNTER_KEY = "bench:noop:done"


@shared_task(name="bench.noop", ignore_result=True, acks_late=True)
def noop(index: int) -> None:
    """Do nothing but count."""
    get_redis().incr(COUNTER_KEY)
