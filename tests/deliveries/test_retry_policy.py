"""The retry policy (deliveries.retry): schedule, jitter and Retry-After parsing."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from deliveries import retry

DEFAULT_SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000]
SAMPLES = 500


def test_schedule_default_from_settings():
    assert retry.schedule() == DEFAULT_SCHEDULE
    assert retry.max_attempts() == 8


@pytest.mark.parametrize(
    ("attempts_made", "base"), list(enumerate(DEFAULT_SCHEDULE, start=1))
)
def test_next_delay_jittered_within_twenty_percent(attempts_made, base):
    delays = [retry.next_delay(attempts_made=attempts_made) for _ in range(SAMPLES)]
    assert all(base * 0.8 <= delay <= base * 1.2 for delay in delays)
    # Really spread over the band, not a constant (P(fail) ~ 0.75**500 per side).
    assert min(delays) < base * 0.9
    assert max(delays) > base * 1.1


def test_next_delay_none_once_schedule_exhausted():
    assert retry.next_delay(attempts_made=7) is not None
    assert retry.next_delay(attempts_made=8) is None
    assert retry.next_delay(attempts_made=9) is None
    assert retry.next_delay(attempts_made=8, retry_after=10) is None


def test_next_delay_follows_schedule_override(settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [1, 2]
    assert retry.schedule() == [1, 2]
    assert retry.max_attempts() == 3
    first = [retry.next_delay(attempts_made=1) for _ in range(SAMPLES)]
    second = [retry.next_delay(attempts_made=2) for _ in range(SAMPLES)]
    assert all(0.8 <= delay <= 1.2 for delay in first)
    assert all(1.6 <= delay <= 2.4 for delay in second)
    assert retry.next_delay(attempts_made=3) is None


def test_next_delay_jitter_setting_zero_gives_exact_schedule(settings):
    settings.WEBHOOK_RETRY_JITTER = 0
    assert [retry.next_delay(attempts_made=n) for n in range(1, 8)] == (
        DEFAULT_SCHEDULE
    )


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(0, 0.0), (1, 1.0), (120, 120.0), (36000, 36000.0), (36001, 36000.0)],
)
def test_next_delay_retry_after_replaces_delay_bounded_by_max(retry_after, expected):
    # Any step: Retry-After wins over the (jittered) scheduled delay.
    for attempts_made in (1, 4, 7):
        delay = retry.next_delay(attempts_made=attempts_made, retry_after=retry_after)
        assert delay == expected


def test_next_delay_retry_after_bounded_by_overridden_schedule(settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [5, 60]
    assert retry.next_delay(attempts_made=1, retry_after=3600) == 60.0
    assert retry.next_delay(attempts_made=1, retry_after=30) == 30.0


NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 45 ", 45.0),
        ("86400", 86400.0),
    ],
)
def test_parse_retry_after_delta_seconds(value, expected):
    assert retry.parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_future_http_date():
    value = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert value.endswith("GMT")
    assert retry.parse_retry_after(value, now=NOW) == 90.0


def test_parse_retry_after_literal_http_date():
    value = "Sun, 01 Jun 2025 12:10:00 GMT"
    assert retry.parse_retry_after(value, now=NOW) == 600.0


def test_parse_retry_after_past_http_date_is_zero():
    value = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert retry.parse_retry_after(value, now=NOW) == 0.0


def test_parse_retry_after_defaults_now_to_current_time():
    value = format_datetime(datetime.now(UTC) + timedelta(seconds=600), usegmt=True)
    assert 590 <= retry.parse_retry_after(value) <= 600


@pytest.mark.parametrize(
    "value", [None, "", "   ", "soon", "-5", "1.5", "Thursday", "12 parsecs"]
)
def test_parse_retry_after_garbage_is_none(value):
    assert retry.parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize(
    ("status", "success"),
    [(199, False), (200, True), (204, True), (299, True), (300, False), (None, False)],
)
def test_is_success_any_2xx(status, success):
    assert retry.is_success(status) is success
