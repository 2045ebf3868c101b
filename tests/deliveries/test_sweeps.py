"""Beat sweeps: due retries, lost tasks, exhausted rows, attempt log cleanup."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections, transaction
from django.utils import timezone
from kombu import Connection

from deliveries import broker
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from deliveries.services import sweeps
from deliveries.services.sweeps import (
    attempt_logs_cleanup,
    deliveries_dead_letter_exhausted,
    deliveries_enqueue_due,
)
from tests.conftest import purge_queues
from tests.factories import make_endpoint, make_event
from webhooks_project import metrics
from webhooks_project.queues import DELIVERIES_QUEUE, RETRIES_QUEUE

pytestmark = pytest.mark.django_db


def setup_delivery(tenant, **fields) -> Delivery:
    event_type = f"sweep.{uuid.uuid4().hex}"
    make_endpoint(tenant=tenant, event_types=[event_type])
    _, [delivery] = make_event(tenant=tenant, event_type=event_type)
    Delivery.objects.filter(pk=delivery.pk).update(**fields)
    delivery.refresh_from_db()
    return delivery


def test_sweep_leaves_fresh_and_not_yet_due_rows(tenant):
    future = timezone.now() + timedelta(hours=2)
    setup_delivery(tenant)  # fresh: lease a few minutes ahead
    setup_delivery(
        tenant,
        status=DeliveryStatus.FAILED,
        next_attempt_at=future,
        lease_expires_at=future,
    )
    assert deliveries_enqueue_due(backlog=0).enqueued == 0


def test_sweep_enqueues_due_retry_and_renews_its_lease(tenant):
    past = timezone.now() - timedelta(seconds=1)
    delivery = setup_delivery(
        tenant,
        status=DeliveryStatus.FAILED,
        next_attempt_at=past,
        lease_expires_at=past,
    )
    result = deliveries_enqueue_due(backlog=0)
    delivery.refresh_from_db()
    assert result.enqueued == 1
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.lease_expires_at > timezone.now()
    assert deliveries_enqueue_due(backlog=0).enqueued == 0


def test_sweep_recovers_in_progress_row_of_dead_worker(tenant):
    past = timezone.now() - timedelta(seconds=1)
    delivery = setup_delivery(
        tenant, status=DeliveryStatus.IN_PROGRESS, lease_expires_at=past
    )
    recovered_before = metrics.DELIVERIES_RECOVERED._value.get()
    result = deliveries_enqueue_due(backlog=0)
    delivery.refresh_from_db()
    assert result.recovered == 1
    # counted: its receiver may get it twice
    assert metrics.DELIVERIES_RECOVERED._value.get() == recovered_before + 1
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.next_attempt_at <= timezone.now()


def test_sweep_ignores_final_rows(tenant):
    past = timezone.now() - timedelta(seconds=1)
    setup_delivery(tenant, status=DeliveryStatus.SUCCEEDED, lease_expires_at=past)
    setup_delivery(tenant, status=DeliveryStatus.DEAD_LETTER, lease_expires_at=past)
    assert deliveries_enqueue_due(backlog=0).enqueued == 0


@pytest.mark.django_db(transaction=True)
def test_sweep_skips_rows_locked_by_a_concurrent_sweep(tenant):
    past = timezone.now() - timedelta(seconds=1)
    locked = setup_delivery(tenant, lease_expires_at=past)
    free = setup_delivery(tenant, lease_expires_at=past)
    holding = threading.Event()
    release = threading.Event()

    def hold_lock():
        try:
            with transaction.atomic():
                Delivery.objects.select_for_update().filter(pk=locked.pk).get()
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert holding.wait(10)
    try:
        # when: a sweep runs while another transaction holds one row
        result = deliveries_enqueue_due(backlog=0)
    finally:
        release.set()
        holder.join(10)
    # then: it took the free row only, without waiting for the lock
    assert result.enqueued == 1
    free.refresh_from_db()
    locked.refresh_from_db()
    assert free.lease_expires_at > timezone.now()
    assert locked.lease_expires_at < timezone.now()
    connection.close()


def test_dead_letter_exhausted_rows(tenant, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [1, 1]
    exhausted = setup_delivery(tenant, status=DeliveryStatus.FAILED, attempt_count=3)
    replayed = setup_delivery(
        tenant, status=DeliveryStatus.PENDING, attempt_count=3, round_start=3
    )
    assert deliveries_dead_letter_exhausted() == 1
    exhausted.refresh_from_db()
    replayed.refresh_from_db()
    assert exhausted.status == DeliveryStatus.DEAD_LETTER
    assert replayed.status == DeliveryStatus.PENDING


def test_attempt_logs_cleanup_keeps_recent_and_unfinished(tenant, settings):
    settings.WEBHOOK_LOG_RETENTION_HOURS = 72
    now = timezone.now()
    old = setup_delivery(
        tenant, status=DeliveryStatus.SUCCEEDED, succeeded_at=now - timedelta(hours=73)
    )
    recent = setup_delivery(
        tenant, status=DeliveryStatus.SUCCEEDED, succeeded_at=now - timedelta(hours=1)
    )
    failing = setup_delivery(tenant, status=DeliveryStatus.DEAD_LETTER)
    for delivery in (old, recent, failing):
        DeliveryAttempt.objects.create(
            delivery=delivery, number=1, started_at=now - timedelta(hours=80)
        )
    assert attempt_logs_cleanup() == 1
    assert not old.attempts.exists()
    assert recent.attempts.exists()
    assert failing.attempts.exists()


def test_attempt_logs_cleanup_deletes_dead_letters_past_retention(tenant, settings):
    # given: a receiver that failed forever fills the attempt table; retention 30 d
    settings.WEBHOOK_RETENTION_DAYS = 30
    now = timezone.now()
    old = setup_delivery(
        tenant,
        status=DeliveryStatus.DEAD_LETTER,
        dead_lettered_at=now - timedelta(days=31),
    )
    recent = setup_delivery(
        tenant,
        status=DeliveryStatus.DEAD_LETTER,
        dead_lettered_at=now - timedelta(days=29),
    )
    for delivery in (old, recent):
        for number in (1, 2, 3):
            DeliveryAttempt.objects.create(
                delivery=delivery, number=number, started_at=now - timedelta(days=40)
            )
    # when
    deleted = attempt_logs_cleanup()
    # then: the old dead letter's attempts went, the delivery itself stays
    assert deleted == 3
    assert not old.attempts.exists()
    assert recent.attempts.count() == 3
    assert Delivery.objects.filter(pk=old.pk).exists()


def queued_overdue(tenant, *, minutes: float) -> Delivery:
    """A pending row queued `minutes` ago whose 5-minute queue lease has passed."""
    now = timezone.now()
    return setup_delivery(
        tenant,
        next_attempt_at=now - timedelta(minutes=minutes),
        lease_expires_at=now - timedelta(seconds=1),
    )


def test_sweep_leaves_overdue_row_waiting_behind_a_backlog(tenant, settings):
    # given: RabbitMQ still holds ready messages, a row queued 10 minutes ago
    settings.WEBHOOK_QUEUE_LEASE_SECONDS = 300
    delivery = queued_overdue(tenant, minutes=10)
    # when
    result = deliveries_enqueue_due(backlog=500)
    # then: not published again; it gets a new lease and is looked at later
    assert result.enqueued == 0
    delivery.refresh_from_db()
    assert delivery.lease_expires_at > timezone.now() + timedelta(minutes=4)


def test_sweep_enqueues_overdue_row_when_queue_is_empty(tenant, settings):
    settings.WEBHOOK_QUEUE_LEASE_SECONDS = 300
    queued_overdue(tenant, minutes=10)
    # when: no backlog: its message is lost
    assert deliveries_enqueue_due(backlog=0).enqueued == 1


def test_sweep_enqueues_row_overdue_eight_leases_despite_backlog(tenant, settings):
    settings.WEBHOOK_QUEUE_LEASE_SECONDS = 300
    queued_overdue(tenant, minutes=41)
    assert deliveries_enqueue_due(backlog=500).enqueued == 1


def test_sweep_enqueues_unpublished_and_due_rows_despite_backlog(tenant):
    # given: rows with no message anywhere (lease = due time): a long retry that
    # came due, and a fresh row whose publish failed
    past = timezone.now() - timedelta(seconds=5)
    setup_delivery(
        tenant,
        status=DeliveryStatus.FAILED,
        attempt_count=1,
        next_attempt_at=past,
        lease_expires_at=past,
    )
    setup_delivery(tenant, next_attempt_at=past, lease_expires_at=past)
    # when / then
    assert deliveries_enqueue_due(backlog=500).enqueued == 2


def test_sweep_recovers_lost_in_progress_row_despite_backlog(tenant):
    past = timezone.now() - timedelta(seconds=1)
    setup_delivery(tenant, status=DeliveryStatus.IN_PROGRESS, lease_expires_at=past)
    result = deliveries_enqueue_due(backlog=500)
    assert (result.enqueued, result.recovered) == (1, 1)


def test_queue_backlog_counts_ready_messages_in_rabbitmq():
    # given: three messages ready in the deliveries queue, one in retries
    purge_queues()
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        producer = conn.Producer()
        for name in (DELIVERIES_QUEUE,) * 3 + (RETRIES_QUEUE,):
            producer.publish({"n": 1}, routing_key=name, exchange="")
    # when
    backlog = broker.queue_backlog()
    purge_queues()
    # then
    assert backlog == 4
    assert metrics.QUEUE_DEPTH.labels(queue="deliveries")._value.get() == 3


def test_put_off_moves_only_waiting_deliveries_and_never_earlier(tenant):
    from deliveries.services.postponing import deliveries_postpone_unclaimed

    make_endpoint(tenant=tenant)
    waiting, held, done, later = (make_event(tenant=tenant)[1][0] for _ in range(4))
    soon = timezone.now() + timedelta(seconds=30)
    Delivery.objects.filter(pk=held.pk).update(status=DeliveryStatus.IN_PROGRESS)
    Delivery.objects.filter(pk=done.pk).update(status=DeliveryStatus.SUCCEEDED)
    Delivery.objects.filter(pk=later.pk).update(
        next_attempt_at=soon + timedelta(hours=1)
    )
    moved = deliveries_postpone_unclaimed(
        delivery_ids=[d.pk for d in (waiting, held, done, later)],
        due=soon,
        reason="circuit_open",
    )
    assert moved == 2  # the waiting ones; `later` keeps its own, later, time
    for delivery in (waiting, held, done, later):
        delivery.refresh_from_db()
    assert waiting.next_attempt_at == waiting.lease_expires_at == soon
    assert later.next_attempt_at == later.lease_expires_at == soon + timedelta(hours=1)
    assert held.status == DeliveryStatus.IN_PROGRESS and held.next_attempt_at < soon
    assert done.status == DeliveryStatus.SUCCEEDED


def test_attempt_logs_cleanup_walks_back_to_what_earlier_runs_cleaned(
    tenant, settings, monkeypatch
):
    # given: batches of two deliveries; five succeeded past retention
    monkeypatch.setattr(sweeps, "CLEANUP_BATCH", 2)
    settings.WEBHOOK_LOG_RETENTION_HOURS = 72
    now = timezone.now()

    def succeeded(hours_ago: float) -> Delivery:
        ended = now - timedelta(hours=hours_ago)
        delivery = setup_delivery(
            tenant, status=DeliveryStatus.SUCCEEDED, succeeded_at=ended
        )
        DeliveryAttempt.objects.create(
            delivery=delivery, number=1, started_at=ended - timedelta(seconds=1)
        )
        return delivery

    missed = succeeded(90)  # behind the cleaned ones below: a run missed it
    cleaned = [succeeded(80 - n) for n in range(5)]
    # when / then: one run takes them all, batch after batch
    assert attempt_logs_cleanup() == 6
    missed_again = succeeded(95)
    newer = succeeded(73)
    # when: the next run, with one more past retention
    deleted = attempt_logs_cleanup()
    # then: it stops at the cleaned ones; what lies behind them waits for its
    # partition's drop
    assert deleted == 1
    assert not newer.attempts.exists()
    assert missed_again.attempts.exists()
    assert not any(d.attempts.exists() for d in [missed, *cleaned])
