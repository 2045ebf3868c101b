"""When each periodic task last succeeded, as /metrics shows it to the alerts."""

import time

import pytest
from celery.signals import task_failure, task_success
from prometheus_client.parser import text_string_to_metric_families

from deliveries import tasks
from tests.conftest import needs_shared_metrics, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    needs_shared_metrics,
]

HEARTBEAT = "webhook_periodic_task_last_success_timestamp_seconds"


def stamps(client) -> dict[str, float]:
    """The heartbeat series /metrics serves, by task name."""
    text = client.get("/metrics").content.decode()
    return {
        sample.labels["task"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == HEARTBEAT
        for sample in family.samples
    }


def test_success_of_a_scheduled_task_stamps_it_and_nothing_else_does(client):
    before = time.time()
    task_success.send(sender=tasks.deliver, result=None)
    task_failure.send(sender=tasks.cleanup_attempt_logs, exception=RuntimeError())
    assert "deliveries.deliver" not in stamps(client)  # not beat's: no series
    assert stamps(client).get("deliveries.cleanup_attempt_logs", 0) < before

    task_success.send(sender=tasks.sweep_dead_letters, result=0)

    assert stamps(client)["deliveries.sweep_dead_letters"] >= before


@pytest.mark.e2e
def test_e2e_beat_and_a_worker_keep_the_sweep_stamp_fresh(
    client, worker_factory, beat_factory
):
    """Beat sends the sweep, a worker runs it, web's /metrics shows the stamp."""
    started = time.time()
    worker_factory()
    beat_factory(WEBHOOK_SWEEP_INTERVAL="1")

    first = wait_until(
        lambda: stamps(client).get("deliveries.enqueue_due", 0) >= started or None,
        timeout=30,
    )
    assert first
    stamped = stamps(client)["deliveries.enqueue_due"]
    # one sweep a second: the stamp moves on while beat and the worker run
    wait_until(lambda: stamps(client)["deliveries.enqueue_due"] > stamped, timeout=15)
    assert stamps(client)["deliveries.enqueue_due"] <= time.time()
