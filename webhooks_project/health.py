"""Liveness (/health) and readiness (/ready: database, RabbitMQ, Redis)."""

import logging
import threading
import time

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from webhooks_project.celery import app as celery_app
from webhooks_project.redis_client import get_redis

logger = logging.getLogger(__name__)

# How long one readiness answer is reused, per process: /ready is anonymous, and
# each check opens an AMQP connection; callers in the meantime share the answer.
READY_CACHE_SECONDS = 1.0
_ready_lock = threading.Lock()
_ready_answer: tuple[float, dict, int] | None = None  # (until, body, status)


@require_GET
def health(request):
    """200 while the process runs."""
    return JsonResponse({"status": "ok"})


@require_GET
def ready(request):
    """200 when the database, RabbitMQ and Redis answer, else 503 naming what failed.

    The answer is at most READY_CACHE_SECONDS old; one check runs at a time.
    """
    global _ready_answer
    with _ready_lock:
        if _ready_answer is None or time.monotonic() >= _ready_answer[0]:
            body, status = _readiness()
            _ready_answer = (time.monotonic() + READY_CACHE_SECONDS, body, status)
        _, body, status = _ready_answer
    return JsonResponse(body, status=status)


def ready_forget() -> None:
    """Check afresh on the next /ready (tests that take a service away)."""
    global _ready_answer
    with _ready_lock:
        _ready_answer = None


def _readiness() -> tuple[dict, int]:
    """Run the checks: the body and status of /ready."""
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
    return body, 503 if failed else 200


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_broker() -> None:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def _check_redis() -> None:
    get_redis().ping()
