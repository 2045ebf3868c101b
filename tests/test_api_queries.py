"""No N+1 queries in the API: a page of 12 rows costs the queries a page of 2 does.

Each list (and the detail views that carry related rows) is read once with a few
rows of each kind and once with six times as many; the statements the ORM sends
must not grow with the rows. The API-key lookup runs as a prepared statement
outside Django's cursor wrapper and is the same for every request either way.
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deliveries.models import AttemptOutcome, Delivery, DeliveryAttempt, DeliveryStatus
from tenants.services import api_key_create
from tests.factories import make_endpoint, make_event

pytestmark = pytest.mark.django_db


def _grow(tenant, *, endpoints: int, events: int, attempts: int) -> None:
    """Add endpoints, keys, events (each fanned out), attempts and dead letters.

    `attempts` each for the new deliveries; every other delivery is dead-lettered.
    """
    for _ in range(endpoints):
        make_endpoint(tenant=tenant)
        api_key_create(tenant=tenant, name="extra")
    for _ in range(events):
        make_event(tenant=tenant)
    now = timezone.now()
    new = Delivery.objects.filter(tenant=tenant, attempts__isnull=True)
    DeliveryAttempt.objects.bulk_create(
        DeliveryAttempt(
            delivery=delivery,
            number=number,
            started_at=now,
            outcome=AttemptOutcome.HTTP_5XX,
            response_status=503,
        )
        for delivery in new
        for number in range(1, attempts + 1)
    )
    ids = list(Delivery.objects.filter(tenant=tenant).values_list("pk", flat=True))
    Delivery.objects.filter(pk__in=ids[::2]).update(
        status=DeliveryStatus.DEAD_LETTER,
        attempt_count=attempts,
        dead_lettered_at=now - timedelta(minutes=1),
        dead_letter_reason="retries exhausted",
    )


def _queries(api, url: str) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as captured:
        response = api.get(url)
    assert response.status_code == 200, response.content
    return len(captured.captured_queries), response.json()


def _urls(tenant) -> dict[str, str]:
    """What to read, by name: the lists, and the newest event and delivery."""
    event = tenant.events.order_by("-id").first()
    delivery = Delivery.objects.filter(tenant=tenant).order_by("-id").first()
    return {
        "events": "/api/v1/events?limit=100",
        "deliveries": "/api/v1/deliveries?limit=100",
        "dead letters": "/api/v1/dead-letters?limit=100",
        "endpoints": "/api/v1/endpoints?limit=100",
        "api keys": "/api/v1/api-keys",
        "event": f"/api/v1/events/{event.pk}",
        "delivery": f"/api/v1/deliveries/{delivery.pk}",
        "attempts": f"/api/v1/deliveries/{delivery.pk}/attempts",
    }


def test_api_queries_do_not_grow_with_rows(api, tenant):
    # given: two endpoints, two events and what they led to
    _grow(tenant, endpoints=2, events=2, attempts=2)
    api.get("/api/v1/endpoints")  # the key's first use records it (one UPDATE)
    small = {name: _queries(api, url) for name, url in _urls(tenant).items()}
    # when: six times as many of each
    _grow(tenant, endpoints=10, events=10, attempts=12)
    large = {name: _queries(api, url) for name, url in _urls(tenant).items()}
    # then: every list returned more rows, the newest event has more deliveries,
    # and every read took the same number of statements
    for name, (count, body) in small.items():
        large_count, large_body = large[name]
        if "results" in body:
            assert len(large_body["results"]) > len(body["results"]), name
        assert large_count == count, (name, count, large_count)
    assert large["event"][1]["deliveries"] > small["event"][1]["deliveries"]
