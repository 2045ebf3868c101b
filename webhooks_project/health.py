"""Liveness (/health) and readiness (/ready: database, RabbitMQ, Redis)."""

import logging

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from webhooks_project.celery import app as celery_app
from webhooks_project.redis_client import get_redis

logger = logging.getLogger(__name__)


@require_GET
def health(request):
    """200 while the process runs."""
    return JsonResponse({"status": "ok"})


@require_GET
def ready(request):
    """200 when the database, RabbitMQ and Redis answer, else 503 naming what failed."""
    checks = {
        "database": _check_database,
        "rabbitmq": _check_broker,
        "redis": _check_redis,
    }
    results = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 (any failure means "not ready")
            logger.warning("readiness check %s failed: %s", name, exc)
            results[name] = f"unavailable: {type(exc).__name__}"
    failed = [name for name, result in results.items() if result != "ok"]
    body = {"status": "ok" if not failed else "unavailable", "checks": results}
    if failed:
        body["detail"] = f"Not ready: {', '.join(failed)} unavailable."
    return JsonResponse(body, status=503 if failed else 200)


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_broker() -> None:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def _check_redis() -> None:
    get_redis().ping()
