"""Endpoint statistics: exact counts, percentiles and series; bounded reads; API."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from deliveries.models import AttemptOutcome, Delivery, DeliveryAttempt, DeliveryStatus
from deliveries.stats import endpoint_stats
from tests.factories import make_endpoint, make_event

pytestmark = pytest.mark.django_db

H = timedelta(hours=1)
M = timedelta(minutes=1)


def hour_floor(moment):
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_floor(moment):
    return hour_floor(moment).replace(hour=0)


def delivery(endpoint, *, status, created_at, attempts=(), event_type="order.new"):
    """A delivery of `endpoint` created at `created_at`, with its attempts
    (started_at, outcome, duration_ms) numbered in order."""
    _, deliveries = make_event(tenant=endpoint.tenant, event_type=event_type)
    [made] = [d for d in deliveries if d.endpoint_id == endpoint.pk]
    Delivery.objects.filter(pk=made.pk).update(status=status, created_at=created_at)
    for number, (started_at, outcome, duration_ms) in enumerate(attempts, 1):
        DeliveryAttempt.objects.create(
            delivery=made,
            number=number,
            started_at=started_at,
            outcome=outcome,
            duration_ms=duration_ms,
        )
    return made


@pytest.fixture
def window(tenant):
    """Four hours from two hours before this hour; deliveries with known attempts."""
    since = hour_floor(timezone.now()) - 2 * H
    until = since + 4 * H
    endpoint = make_endpoint(tenant=tenant, event_types=["order.*"])
    noise = make_endpoint(tenant=tenant, event_types=["noise.*"])
    created = since + 10 * M
    ok, s4, s5 = (
        AttemptOutcome.SUCCESS,
        AttemptOutcome.HTTP_4XX,
        AttemptOutcome.HTTP_5XX,
    )
    timeout, refused = AttemptOutcome.TIMEOUT, AttemptOutcome.CONNECTION_ERROR
    delivery(
        endpoint,
        status=DeliveryStatus.SUCCEEDED,
        created_at=created,
        attempts=[(since + 15 * M, s5, 100), (since + H + 10 * M, ok, 20)],
    )
    delivery(
        endpoint,
        status=DeliveryStatus.SUCCEEDED,
        created_at=created,
        attempts=[(since + 20 * M, ok, 40)],
    )
    delivery(
        endpoint,
        status=DeliveryStatus.FAILED,
        created_at=created,
        attempts=[
            (since + 30 * M, timeout, 15000),
            (since + 2 * H + 5 * M, refused, 0),
            (until + 10 * M, ok, 7),  # after the window: not counted
        ],
    )
    delivery(
        endpoint,
        status=DeliveryStatus.DEAD_LETTER,
        created_at=created,
        attempts=[(since + H + 30 * M, s4, 10)],
    )
    delivery(endpoint, status=DeliveryStatus.PENDING, created_at=created)
    # created before the window: neither it nor its attempt counts
    delivery(
        endpoint,
        status=DeliveryStatus.SUCCEEDED,
        created_at=since - M,
        attempts=[(since + 5 * M, ok, 1)],
    )
    # another endpoint's
    delivery(
        noise,
        status=DeliveryStatus.SUCCEEDED,
        created_at=created,
        attempts=[(since + 5 * M, ok, 1)],
        event_type="noise.new",
    )
    return endpoint, since, until


def test_stats_counts_percentiles_and_series_are_exact(window):
    endpoint, since, until = window
    # when
    stats = endpoint_stats(endpoint=endpoint, since=since, until=until)
    # then
    assert stats["since"] == since
    assert stats["until"] == until
    assert stats["sampled"] is False
    assert stats["deliveries"] == {
        "pending": 1,
        "in_progress": 0,
        "succeeded": 2,
        "failed": 1,
        "dead_letter": 1,
        "expired": 0,
    }
    assert stats["attempts"] == {
        "success": 2,
        "4xx": 1,
        "5xx": 1,
        "other": 0,
        "timeout": 1,
        "connection_error": 1,
        "blocked": 0,
    }
    assert stats["attempts_total"] == 6
    assert stats["success_rate"] == pytest.approx(2 / 6)
    # durations 0, 10, 20, 40, 100, 15000: observed values, never interpolated
    assert stats["duration_ms"] == {"p50": 20, "p95": 15000}
    assert stats["last_success_at"] == since + H + 10 * M
    assert stats["last_failure_at"] == since + 2 * H + 5 * M
    assert stats["circuit"]["state"] == "closed"
    assert stats["series"] == [
        {"start": since, "attempts": 3, "succeeded": 1, "failed": 2, "p50_ms": 100},
        {"start": since + H, "attempts": 2, "succeeded": 1, "failed": 1, "p50_ms": 10},
        {
            "start": since + 2 * H,
            "attempts": 1,
            "succeeded": 0,
            "failed": 1,
            "p50_ms": 0,
        },
        {
            "start": since + 3 * H,
            "attempts": 0,
            "succeeded": 0,
            "failed": 0,
            "p50_ms": None,
        },
    ]


def test_stats_of_a_quiet_window_are_zeros_and_nulls(window):
    endpoint, since, _ = window
    stats = endpoint_stats(endpoint=endpoint, since=since - 5 * H, until=since - H)
    assert set(stats["deliveries"].values()) == {0}
    assert stats["attempts_total"] == 0
    assert stats["success_rate"] is None
    assert stats["duration_ms"] == {"p50": None, "p95": None}
    assert stats["last_success_at"] is None
    assert stats["last_failure_at"] is None
    assert [bucket["attempts"] for bucket in stats["series"]] == [0, 0, 0, 0]


def test_stats_series_starts_at_the_hour_of_since(window):
    endpoint, since, until = window
    stats = endpoint_stats(endpoint=endpoint, since=since + 30 * M, until=until)
    starts = [bucket["start"] for bucket in stats["series"]]
    assert starts == [since, since + H, since + 2 * H, since + 3 * H]
    # the deliveries were created before since + 30 min: out of the window
    assert stats["attempts_total"] == 0


def test_stats_over_72_hours_has_daily_buckets(tenant):
    # given: attempts on the second and the fourth day of a four-day window
    since = day_floor(timezone.now()) - timedelta(days=3)
    until = since + timedelta(days=4)
    endpoint = make_endpoint(tenant=tenant)
    day = timedelta(days=1)
    delivery(
        endpoint,
        status=DeliveryStatus.SUCCEEDED,
        created_at=since + H,
        attempts=[
            (since + day + H, AttemptOutcome.HTTP_5XX, 30),
            (since + day + 2 * H, AttemptOutcome.SUCCESS, 10),
            (since + 3 * day + H, AttemptOutcome.SUCCESS, 50),
        ],
    )
    # when
    stats = endpoint_stats(endpoint=endpoint, since=since, until=until)
    # then
    assert [b["start"] for b in stats["series"]] == [since + n * day for n in range(4)]
    assert [b["attempts"] for b in stats["series"]] == [0, 2, 0, 1]
    assert [b["succeeded"] for b in stats["series"]] == [0, 1, 0, 1]
    assert [b["p50_ms"] for b in stats["series"]] == [None, 10, None, 50]


def test_stats_read_at_most_the_cap_newest_deliveries_and_say_so(window):
    endpoint, since, until = window
    # when
    capped = endpoint_stats(
        endpoint=endpoint, since=since, until=until, max_deliveries=2
    )
    exact = endpoint_stats(
        endpoint=endpoint, since=since, until=until, max_deliveries=5
    )
    # then
    assert capped["sampled"] is True
    assert sum(capped["deliveries"].values()) == 2
    assert exact["sampled"] is False
    assert sum(exact["deliveries"].values()) == 5


def test_stats_are_one_sql_statement(window, django_assert_max_num_queries):
    endpoint, since, until = window
    with django_assert_max_num_queries(1):
        endpoint_stats(endpoint=endpoint, since=since, until=until)


def stats(api, endpoint_id, **params):
    return api.get(f"/api/v1/endpoints/{endpoint_id}/stats", params)


def test_api_stats_answer_the_window(api, window):
    endpoint, since, until = window
    # when
    response = stats(api, endpoint.pk, since=since.isoformat(), until=until.isoformat())
    # then
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["attempts_total"] == 6
    assert body["deliveries"]["succeeded"] == 2
    assert body["duration_ms"] == {"p50": 20, "p95": 15000}
    assert [b["attempts"] for b in body["series"]] == [3, 2, 1, 0]
    assert body["circuit"]["state"] == "closed"


def test_api_stats_default_to_the_last_24_hours_hourly(api, window):
    endpoint, _, _ = window
    body = stats(api, endpoint.pk).json()
    since = datetime.fromisoformat(body["since"])
    until = datetime.fromisoformat(body["until"])
    assert until - since == timedelta(hours=24)
    assert abs((until - timezone.now()).total_seconds()) < 60
    assert len(body["series"]) in (24, 25)
    assert body["attempts_total"] >= 5


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:01Z"}, "since"),
        ({"since": "2025-01-01T00:00:00Z"}, "since"),
        ({"since": "9999-01-01T00:00:00Z"}, "since"),
        ({"until": "0001-01-01T00:00:00Z"}, "until"),
        ({"since": "soon"}, "since"),
        ({"until": "later"}, "until"),
    ],
)
def test_api_stats_reject_bad_windows_naming_the_field(api, tenant, params, field):
    endpoint = make_endpoint(tenant=tenant)
    response = stats(api, endpoint.pk, **params)
    assert response.status_code == 400, response.content
    assert field in response.json()


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"},
        {"since": "9999-12-31T00:00:00Z", "until": "9999-12-31T23:59:59Z"},
        {"since": "0001-01-01T00:00:00Z", "until": "0001-01-02T00:00:00Z"},
    ],
)
def test_api_stats_of_edge_windows_answer(api, tenant, params):
    endpoint = make_endpoint(tenant=tenant)
    response = stats(api, endpoint.pk, **params)
    assert response.status_code == 200, response.content
    assert response.json()["attempts_total"] == 0


def test_api_stats_of_a_foreign_or_unknown_endpoint_is_404(api, other_api, window):
    endpoint, _, _ = window
    foreign = stats(other_api, endpoint.pk)
    unknown = stats(api, uuid.uuid4())
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()
