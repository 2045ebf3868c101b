"""Every API call but ingestion takes from the tenant's API bucket (Redis)."""

import pytest

pytestmark = pytest.mark.django_db

ORDER = {"event_type": "order.created", "payload": {"n": 1}}


def test_api_calls_over_the_limit_are_429_with_headers(api, settings):
    # given: 1 call/s, a burst of 2
    settings.WEBHOOK_API_RATE_LIMIT = 1
    # when
    statuses = [api.get("/api/v1/endpoints").status_code for _ in range(3)]
    # then
    assert statuses == [200, 200, 429]
    limited = api.get("/api/v1/deliveries")  # one bucket for every kind of call
    assert limited.status_code == 429
    assert limited.json()["detail"].startswith("Rate limit exceeded")
    assert int(limited["Retry-After"]) >= 1
    assert limited["RateLimit-Limit"] == "2"
    assert limited["RateLimit-Remaining"] == "0"


def test_api_bucket_is_per_tenant(api, other_api, settings):
    settings.WEBHOOK_API_RATE_LIMIT = 1
    assert [api.get("/api/v1/endpoints").status_code for _ in range(3)][-1] == 429
    assert other_api.get("/api/v1/endpoints").status_code == 200


def test_publishing_uses_its_own_bucket_not_the_apis(api, settings):
    # given: the API bucket spent
    settings.WEBHOOK_API_RATE_LIMIT = 1
    while api.get("/api/v1/events").status_code != 429:
        pass
    # then: publishing still goes, and does not spend API tokens either
    statuses = [
        api.post("/api/v1/events", ORDER, format="json").status_code for _ in range(5)
    ]
    assert statuses == [202] * 5


def test_api_limit_zero_turns_it_off(api, settings):
    settings.WEBHOOK_API_RATE_LIMIT = 0
    assert {api.get("/api/v1/endpoints").status_code for _ in range(10)} == {200}


def test_unauthenticated_calls_are_401_not_throttled(client, settings):
    settings.WEBHOOK_API_RATE_LIMIT = 1
    statuses = {client.get("/api/v1/endpoints").status_code for _ in range(5)}
    assert statuses == {401}


def test_api_calls_go_on_without_redis(api, settings, redis_away):
    # given: a limit that would refuse the third call, and Redis out of reach
    settings.WEBHOOK_API_RATE_LIMIT = 1
    # then: the limit fails open, as ingestion's does
    assert {api.get("/api/v1/endpoints").status_code for _ in range(4)} == {200}
