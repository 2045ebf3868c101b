"""A database that does not answer: the API says 503 with Retry-After, never 500."""

import json

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/events", {"event_type": "order.created", "payload": {}}),
        ("get", "/api/v1/endpoints", None),
        ("get", "/api/v1/deliveries", None),
    ],
)
def test_api_database_unreachable_answers_503(api, database_away, method, path, body):
    # when
    response = getattr(api, method)(
        path,
        json.dumps(body) if body is not None else None,
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="away-1",
    )
    # then
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "database" in response.json()["detail"]


def test_api_database_back_answers_again(api, database_away):
    response = api.get("/api/v1/endpoints")
    assert response.status_code == 503
    # when: the database is reachable again
    connection.close()
    connection.settings_dict["PORT"] = ""
    # then
    assert api.get("/api/v1/endpoints").status_code == 200
