"""Operations endpoints: liveness, readiness and the OpenAPI schema and docs.

None of them needs an API key; /ready talks to the real PostgreSQL, RabbitMQ and
Redis of the test environment.
"""

import time

import pytest

from tests.conftest import take_redis_away
from tests.faults.stack import free_port
from webhooks_project.health import READY_CACHE_SECONDS, ready_forget


@pytest.mark.parametrize("path", ["/health", "/health/"])
def test_health_ok_without_key(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_rejects_post(client):
    assert client.post("/health").status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/ready", "/ready/"])
def test_ready_all_services_ok(client, path):
    response = client.get(path)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "rabbitmq": "ok", "redis": "ok"}


@pytest.mark.parametrize("path", ["/api/schema", "/api/schema/"])
def test_schema_openapi_document_without_key(client, path):
    response = client.get(path, HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    content = response.content.decode()
    assert "openapi" in content
    assert "/api/v1/events" in content


def test_schema_default_format_is_openapi_3(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert b"openapi: 3." in response.content or b'"openapi": "3.' in (response.content)


@pytest.mark.parametrize("path", ["/api/docs", "/api/docs/"])
def test_docs_swagger_ui_without_key(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


@pytest.fixture(autouse=True)
def _fresh_readiness():
    """Each test checks afresh, not the answer of the test before."""
    ready_forget()
    yield
    ready_forget()


@pytest.mark.django_db(transaction=True)
def test_ready_answer_is_reused_for_a_second(client, monkeypatch):
    # given: a first answer while everything is up
    assert client.get("/ready").status_code == 200
    # when: Redis goes away
    take_redis_away(monkeypatch)
    # then: callers within the second share the first answer (no new checks,
    # no new AMQP connection per anonymous request) ...
    assert client.get("/ready").status_code == 200
    # ... and the next check, once it is older, sees Redis gone
    time.sleep(READY_CACHE_SECONDS)
    assert client.get("/ready").status_code == 503


@pytest.fixture
def rabbitmq_away(monkeypatch):
    """The broker URL the readiness check connects to, aimed at a closed port."""
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    monkeypatch.setenv("CELERY_BROKER_WRITE_URL", url)  # read on each connection


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("away", "name"),
    [
        ("database_away", "database"),
        ("rabbitmq_away", "rabbitmq"),
        ("redis_away", "redis"),
    ],
)
def test_ready_names_the_service_that_is_unavailable(client, request, away, name):
    # given: one service does not answer
    request.getfixturevalue(away)
    # when
    response = client.get("/ready")
    # then: 503, that service named, the others still reported ok
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"][name].startswith("unavailable")
    assert {k for k, v in body["checks"].items() if v == "ok"} == (
        {"database", "rabbitmq", "redis"} - {name}
    )
    assert body["detail"] == f"Not ready: {name} unavailable."
