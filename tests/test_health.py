"""Operations endpoints: liveness, readiness and the OpenAPI schema and docs.

None of them needs an API key; /ready talks to the real PostgreSQL, RabbitMQ and
Redis of the test environment.
"""

import pytest


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
