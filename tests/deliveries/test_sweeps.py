"""Beat sweeps: due retries, lost tasks, exhausted rows, attempt log cleanup."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from deliveries.services.sweeps import (
    attempt_logs_cleanup,
    deliveries_dead_letter_exhausted,
    deliveries_enqueue_due,
)
from tests.factories import make_endpoint, make_event

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
    assert deliveries_enqueue_due().enqueued == 0


def test_sweep_enqueues_due_retry_and_renews_its_lease(tenant):
    past = timezone.now() - timedelta(seconds=1)
    delivery = setup_delivery(
        tenant,
        status=DeliveryStatus.FAILED,
        next_attempt_at=past,
        lease_expires_at=past,
    )
    result = deliveries_enqueue_due()
    delivery.refresh_from_db()
    assert result.enqueued == 1
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.lease_expires_at > timezone.now()
    assert deliveries_enqueue_due().enqueued == 0


def test_sweep_recovers_in_progress_row_of_dead_worker(tenant):
    past = timezone.now() - timedelta(seconds=1)
    delivery = setup_delivery(
        tenant, status=DeliveryStatus.IN_PROGRESS, lease_expires_at=past
    )
    result = deliveries_enqueue_due()
    delivery.refresh_from_db()
    assert result.recovered == 1
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.next_attempt_at <= timezone.now()


def test_sweep_ignores_final_rows(tenant):
    past = timezone.now() - timedelta(seconds=1)
    setup_delivery(tenant, status=DeliveryStatus.SUCCEEDED, lease_expires_at=past)
    setup_delivery(tenant, status=DeliveryStatus.DEAD_LETTER, lease_expires_at=past)
    assert deliveries_enqueue_due().enqueued == 0


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
        result = deliveries_enqueue_due()
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


@pytest.mark.parametrize(
    ("overdue_minutes", "expected_lease_minutes"),
    [(0, 5), (10, 10), (25, 25), (120, 40)],
)
def test_sweep_lease_grows_with_how_long_a_row_is_overdue(
    tenant, settings, overdue_minutes, expected_lease_minutes
):
    """A row still waiting behind a long backlog is not published again each sweep."""
    # given: a 5-minute queue lease, a pending row due `overdue_minutes` ago
    settings.WEBHOOK_QUEUE_LEASE_SECONDS = 300
    now = timezone.now()
    due = now - timedelta(minutes=overdue_minutes)
    delivery = setup_delivery(
        tenant, next_attempt_at=due, lease_expires_at=now - timedelta(seconds=1)
    )
    # when
    assert deliveries_enqueue_due().enqueued == 1
    # then: it waits as long again as it is overdue, at least one lease, at most 8
    delivery.refresh_from_db()
    lease = (delivery.lease_expires_at - now).total_seconds() / 60
    assert lease == pytest.approx(expected_lease_minutes, abs=0.5)
