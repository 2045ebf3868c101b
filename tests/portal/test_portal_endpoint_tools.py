"""Test events, recovery of a time window and the last 24 hours, in the portal."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deliveries.models import AttemptOutcome, Delivery, DeliveryAttempt, Event
from deliveries.services.ingest import event_ingest
from tests.portal.conftest import CONSUMER

pytestmark = pytest.mark.django_db


def test_send_test_event_to_this_endpoint_only(portal, owned, foreign):
    # given: an endpoint that wants other types only
    endpoint, _ = owned
    endpoint.event_types = ["order.created"]
    endpoint.save()
    # when
    response = portal.post(
        reverse("portal:endpoint-test", args=[endpoint.pk]),
        {"event_type": "webhook.test", "payload": '{"hello": "world"}'},
    )
    # then: one event, delivered to this endpoint alone
    assert response.status_code == 302
    event = Event.objects.get(event_type="webhook.test")
    assert event.payload == {"hello": "world"}
    assert event.consumer == CONSUMER
    assert list(event.deliveries.values_list("endpoint_id", flat=True)) == [endpoint.pk]
    page = portal.get(response["Location"]).content.decode()
    assert "Test event webhook.test sent" in page
    assert "webhook.test" in page


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"event_type": "bad type", "payload": ""}, "letters, digits"),
        ({"event_type": "webhook.test", "payload": "[1]"}, "JSON object"),
        ({"event_type": "webhook.test", "payload": "{nope"}, "Not valid JSON"),
        ({"event_type": "webhook.test", "payload": '{"n": 1e400}'}, "out of range"),
        ({"event_type": "webhook.test", "payload": "[" * 5000}, "Not valid JSON"),
        (
            {"event_type": "webhook.test", "payload": '{"a": "\\ud800"}'},
            "lone surrogate",
        ),
    ],
)
def test_bad_test_event_is_not_sent(portal, owned, data, message):
    endpoint, _ = owned
    url = reverse("portal:endpoint-test", args=[endpoint.pk])
    page = portal.post(url, data, follow=True).content.decode()
    assert "Test event not sent" in page and message in page
    assert (
        not Event.objects.filter(deliveries__endpoint=endpoint)
        .exclude(event_type="order.created")
        .exists()
    )


def test_test_event_to_a_paused_endpoint_is_refused(portal, owned):
    endpoint, _ = owned
    portal.post(reverse("portal:endpoint-pause", args=[endpoint.pk]))
    url = reverse("portal:endpoint-test", args=[endpoint.pk])
    page = portal.post(url, {"event_type": "webhook.test"}, follow=True)
    assert "Resume the endpoint first" in page.content.decode()
    assert not Event.objects.filter(event_type="webhook.test").exists()


def test_recover_sends_what_a_paused_endpoint_missed(portal, owned, tenant):
    # given: events while the endpoint was paused, for it and for another consumer
    endpoint, _ = owned
    start = timezone.now() - timedelta(minutes=1)
    portal.post(reverse("portal:endpoint-pause", args=[endpoint.pk]))
    missed = event_ingest(tenant=tenant, event_type="a.b", payload={}).event
    event_ingest(tenant=tenant, event_type="a.b", payload={}, consumer="cust_7")
    portal.post(reverse("portal:endpoint-resume", args=[endpoint.pk]))
    # when
    form = portal.get(reverse("portal:endpoint-recover", args=[endpoint.pk]))
    assert form.status_code == 200
    response = portal.post(
        reverse("portal:endpoint-recover", args=[endpoint.pk]),
        {"since": start.strftime("%Y-%m-%dT%H:%M")},
        follow=True,
    )
    # then: the dead letter queued again and the missed event delivered
    page = response.content.decode()
    assert "Recovery: 1 dead letters queued again, 1 missed events sent." in page
    assert Delivery.objects.filter(endpoint=endpoint, event=missed).exists()
    assert Delivery.objects.filter(endpoint=endpoint).count() == 2
    # again: nothing new
    again = portal.post(
        reverse("portal:endpoint-recover", args=[endpoint.pk]),
        {"since": start.strftime("%Y-%m-%dT%H:%M")},
        follow=True,
    )
    assert "0 missed events sent" in again.content.decode()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"since": ""}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-02T00:00", "until": "2026-01-01T00:00"}, "until"),
    ],
)
def test_recover_form_errors_beside_the_field(portal, owned, data, field):
    endpoint, _ = owned
    url = reverse("portal:endpoint-recover", args=[endpoint.pk])
    response = portal.post(url, data)
    assert response.status_code == 200
    assert list(response.context["form"].errors) == [field]


def test_endpoint_page_draws_the_last_24_hours(portal, owned):
    # given: two attempts, one failed and one succeeded, an hour apart
    endpoint, delivery = owned
    now = timezone.now()
    for number, outcome, started, duration in (
        (1, AttemptOutcome.HTTP_5XX, now - timedelta(hours=1), 300),
        (2, AttemptOutcome.SUCCESS, now - timedelta(minutes=1), 100),
    ):
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=number,
            started_at=started,
            duration_ms=duration,
            outcome=outcome,
        )
    # when
    response = portal.get(reverse("portal:endpoint", args=[endpoint.pk]))
    # then: the figures and an SVG with a green and a red bar
    page = response.content.decode()
    assert "50.0 %" in page
    assert 'class="bar bar-ok"' in page and 'class="bar bar-bad"' in page
    assert "<svg" in page and "latency-point" in page
    assert "No attempts in the last 24 hours" not in page
