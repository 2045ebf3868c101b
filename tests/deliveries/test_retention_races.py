"""Retention beside a concurrent retry: whichever locks the delivery first wins,
and the other never waits long nor fails with a 500."""

import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.services.retention import events_purge_expired, purge_sql
from deliveries.services.scheduling import delivery_requeue
from tests.conftest import wait_until
from tests.factories import make_endpoint, make_event

pytestmark = pytest.mark.django_db(transaction=True)


def succeeded_event(tenant) -> tuple[Event, Delivery]:
    make_endpoint(tenant=tenant)
    event, [delivery] = make_event(tenant=tenant)
    Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.SUCCEEDED)
    return event, delivery


def in_thread(target) -> tuple[threading.Thread, dict]:
    """Run `target` in a thread with its own connection; its result or error."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = target()
        except BaseException as exc:  # re-raised by the test
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def waiting_for_a_lock() -> int:
    """Backends of this database waiting for a lock now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def test_retry_that_locked_first_keeps_its_event_and_the_purge_does_not_wait(
    tenant,
):
    # given: an expired event whose delivery a retry holds (its transaction open)
    event, delivery = succeeded_event(tenant)
    locked, release = threading.Event(), threading.Event()

    def retry():
        with transaction.atomic():
            delivery_requeue(delivery=delivery)
            locked.set()
            assert release.wait(30)

    thread, outcome = in_thread(retry)
    assert locked.wait(30)
    # when: the purge runs meanwhile
    started = time.monotonic()
    result = events_purge_expired(now=timezone.now() + timedelta(days=31))
    waited = time.monotonic() - started
    release.set()
    thread.join(30)
    # then: it skipped the event at once; the retry went through
    assert "error" not in outcome, outcome
    assert waited < 1.0
    assert result.events == 0
    assert Event.objects.filter(pk=event.pk).exists()
    assert Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.PENDING
    # and a later purge keeps it while its delivery is open again
    assert events_purge_expired(now=timezone.now() + timedelta(days=31)).events == 0


def test_retry_that_waited_behind_the_purge_answers_404(api, tenant):
    # given: a purge batch that deleted the event and has not committed yet
    event, delivery = succeeded_event(tenant)
    deleted, commit = threading.Event(), threading.Event()

    def purge():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                purge_sql(),
                {
                    "tenant": tenant.pk,
                    "after": uuid.UUID(int=0),
                    "below": uuid.UUID(int=(1 << 128) - 1),
                    "cutoff": timezone.now() + timedelta(days=1),
                    "batch": 10,
                    "succeeded": DeliveryStatus.SUCCEEDED,
                    "dead_letter": DeliveryStatus.DEAD_LETTER,
                    "expired": DeliveryStatus.EXPIRED,
                },
            )
            deleted.set()
            assert commit.wait(30)
            return cursor.fetchone()

    purge_thread, purged = in_thread(purge)
    assert deleted.wait(30)
    # when: a retry of its delivery comes in, and waits for the purge's lock
    retry_thread, answer = in_thread(
        lambda: api.post(f"/api/v1/deliveries/{delivery.pk}/retry")
    )
    wait_until(waiting_for_a_lock, timeout=10)
    commit.set()
    purge_thread.join(30)
    retry_thread.join(30)
    # then: the purge won; the retry found nothing: 404, not a 500
    assert "error" not in purged, purged
    assert purged["value"][2:] == (1, 1, 0)
    assert "error" not in answer, answer
    assert answer["value"].status_code == 404
    assert not Event.objects.filter(pk=event.pk).exists()
