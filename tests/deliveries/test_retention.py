"""Retention: expired events whose deliveries are all final go, with their deliveries
and attempts; everything else stays.

The purge runs with a `now` days ahead: the events made now are then past
their retention, exactly as they will be then.
"""

import secrets
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries import tasks
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from deliveries.services.retention import events_purge_expired
from tests.factories import make_endpoint, make_event, make_tenant
from webhooks_project import metrics
from webhooks_project.ids import uuid7_floor

pytestmark = pytest.mark.django_db

FINAL = (DeliveryStatus.SUCCEEDED, DeliveryStatus.DEAD_LETTER)
OPEN = (DeliveryStatus.PENDING, DeliveryStatus.FAILED, DeliveryStatus.IN_PROGRESS)


def days_ahead(days: float):
    return timezone.now() + timedelta(days=days)


def event_with(tenant, *statuses: str, attempts: int = 2) -> tuple[Event, list]:
    """An event with one delivery per status, each with `attempts` attempt rows.

    The tenant's endpoints all take every event type: the event gets a delivery
    to each, and those beyond `statuses` are removed.
    """
    for _ in range(len(statuses) - tenant.endpoints.count()):
        make_endpoint(tenant=tenant)
    event, deliveries = make_event(tenant=tenant)
    for delivery, status in zip(deliveries, statuses, strict=False):
        Delivery.objects.filter(pk=delivery.pk).update(status=status)
        for number in range(1, attempts + 1):
            DeliveryAttempt.objects.create(
                delivery=delivery, number=number, started_at=timezone.now()
            )
    Delivery.objects.filter(event=event).exclude(
        pk__in=[d.pk for d in deliveries[: len(statuses)]]
    ).delete()
    return event, [d.pk for d in deliveries[: len(statuses)]]


def exists(event: Event) -> bool:
    return Event.objects.filter(pk=event.pk).exists()


def test_purge_deletes_expired_final_events_with_deliveries_and_attempts(api, tenant):
    # given: events whose deliveries all succeeded, or were dead-lettered, or both
    succeeded, succeeded_ids = event_with(tenant, DeliveryStatus.SUCCEEDED)
    dead, dead_ids = event_with(tenant, DeliveryStatus.DEAD_LETTER)
    both, both_ids = event_with(tenant, *FINAL)
    deleted_deliveries = succeeded_ids + dead_ids + both_ids
    # when: 31 days later
    result = events_purge_expired(now=days_ahead(31))
    # then: gone with their deliveries and attempts, and the API says 404
    assert result.events == 3
    assert result.deliveries == 4
    assert result.attempts == 8
    assert result.finished
    for event in (succeeded, dead, both):
        assert api.get(f"/api/v1/events/{event.pk}").status_code == 404
    for delivery_id in deleted_deliveries:
        assert api.get(f"/api/v1/deliveries/{delivery_id}").status_code == 404
        assert api.get(f"/api/v1/deliveries/{delivery_id}/attempts").status_code == 404
        assert api.post(f"/api/v1/deliveries/{delivery_id}/retry").status_code == 404
    assert not DeliveryAttempt.objects.filter(
        delivery_id__in=deleted_deliveries
    ).exists()


def test_purge_deletes_an_expired_event_without_deliveries(tenant):
    # given: no endpoint matched it
    event, _ = make_event(tenant=tenant)
    assert not event.deliveries.exists()
    # when
    result = events_purge_expired(now=days_ahead(31))
    # then
    assert result.events == 1
    assert not exists(event)


@pytest.mark.parametrize("status", OPEN)
def test_purge_keeps_an_expired_event_with_an_open_delivery(api, tenant, status):
    # given: one delivery final, the other still to be driven
    event, [done, open_] = event_with(tenant, DeliveryStatus.SUCCEEDED, status)
    # when
    result = events_purge_expired(now=days_ahead(400))
    # then: nothing of it goes, not even the final delivery or its attempts
    assert result.events == result.deliveries == result.attempts == 0
    assert api.get(f"/api/v1/events/{event.pk}").status_code == 200
    assert api.get(f"/api/v1/deliveries/{done}").status_code == 200
    assert DeliveryAttempt.objects.filter(delivery_id=done).count() == 2
    assert Delivery.objects.get(pk=open_).status == status


def test_purge_keeps_events_within_retention(tenant, settings):
    settings.WEBHOOK_RETENTION_DAYS = 30
    event, _ = event_with(tenant, DeliveryStatus.SUCCEEDED)
    result = events_purge_expired(now=days_ahead(29.9))
    assert result.events == 0
    assert exists(event)


def test_purge_follows_each_tenants_retention_and_touches_no_other(settings):
    # given: a tenant keeping 5 days, one the default (30), one 60 days
    settings.WEBHOOK_RETENTION_DAYS = 30
    short = make_tenant(retention_days=5)
    default = make_tenant()
    long = make_tenant(retention_days=60)
    events = {
        tenant.pk: event_with(tenant, DeliveryStatus.SUCCEEDED)[0]
        for tenant in (short, default, long)
    }
    # when: 10 days on, only the 5-day tenant's event is past its retention
    assert events_purge_expired(now=days_ahead(10)).events == 1
    # then
    assert not exists(events[short.pk])
    assert exists(events[default.pk])
    assert exists(events[long.pk])
    # when: 31 days on, the default tenant's too, not the 60-day one's
    assert events_purge_expired(now=days_ahead(31)).events == 1
    assert not exists(events[default.pk])
    assert exists(events[long.pk])
    # and the setting moves the default tenant's retention, not the others'
    settings.WEBHOOK_RETENTION_DAYS = 1
    assert events_purge_expired(now=days_ahead(2)).events == 0
    assert exists(events[long.pk])


def test_purge_goes_past_kept_events_batch_after_batch(tenant):
    # given: the oldest events are kept (open deliveries), newer ones can go
    kept = [event_with(tenant, DeliveryStatus.PENDING)[0] for _ in range(3)]
    gone = [event_with(tenant, DeliveryStatus.SUCCEEDED)[0] for _ in range(5)]
    # when: two events a batch
    result = events_purge_expired(now=days_ahead(31), batch=2)
    # then: one run reaches past the kept ones to the end
    assert result.finished
    assert result.events == 5
    assert result.batches >= 4
    assert all(exists(event) for event in kept)
    assert not any(exists(event) for event in gone)


def test_purge_stops_at_its_budget_and_the_next_run_goes_on(tenant):
    events = [event_with(tenant, DeliveryStatus.SUCCEEDED)[0] for _ in range(3)]
    # no time at all: nothing done, not finished
    result = events_purge_expired(now=days_ahead(31), budget=0)
    assert (result.events, result.finished) == (0, False)
    assert all(exists(event) for event in events)
    # the next run takes the rest
    assert events_purge_expired(now=days_ahead(31)).events == 3


def test_purge_counts_what_it_deletes_by_kind(tenant):
    def counted() -> dict[str, float]:
        return {
            kind: metrics.RETENTION_DELETED.labels(kind)._value.get()
            for kind in ("events", "deliveries", "attempts")
        }

    before = counted()
    event_with(tenant, *FINAL, attempts=3)
    events_purge_expired(now=days_ahead(31))
    after = counted()
    assert {kind: after[kind] - before[kind] for kind in after} == {
        "events": 1,
        "deliveries": 2,
        "attempts": 6,
    }


def test_purge_task_deletes_expired_events_and_reports_how_many(tenant, settings):
    # given: the task purges with the real clock; one event 2 days old, one new
    settings.WEBHOOK_RETENTION_DAYS = 1
    old = old_event(tenant, days=2)
    new, _ = event_with(tenant, DeliveryStatus.SUCCEEDED)
    # when / then
    assert tasks.purge_expired_events() == 1
    assert not exists(old)
    assert exists(new)


def old_event(tenant, *, days: float) -> Event:
    """An event made `days` ago (its UUIDv7 and created_at), delivered."""
    then = timezone.now() - timedelta(days=days)
    event_id = uuid.UUID(int=uuid7_floor(then).int | secrets.randbits(62))
    event = Event.objects.create(
        pk=event_id, tenant=tenant, event_type="order.created", payload={}
    )
    Event.objects.filter(pk=event_id).update(created_at=then)
    Delivery.objects.create(
        tenant=tenant,
        event=event,
        endpoint=make_endpoint(tenant=tenant),
        status=DeliveryStatus.SUCCEEDED,
    )
    return event


def test_a_retention_beyond_any_date_keeps_the_purge_running(tenant):
    # given: a tenant whose retention was set past what a date can hold (stored
    # before the admin's bound, or straight in the database)
    from tenants.models import Tenant

    Tenant.objects.filter(pk=tenant.pk).update(retention_days=10**6)
    other = make_tenant(retention_days=1)
    event, _ = event_with(other, DeliveryStatus.SUCCEEDED)
    # when / then: the run goes on and purges the other tenant's expired event
    events_purge_expired(now=days_ahead(2))
    assert not exists(event)
