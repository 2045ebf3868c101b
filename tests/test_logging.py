"""JSON log lines: the formatter, LOG_FORMAT, and the ids on delivery log records."""

import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import datetime

import pytest

from deliveries.models import DeliveryStatus
from deliveries.services.attempts import delivery_run
from subscriptions.models import Endpoint
from tests.conftest import REPO_ROOT, wait_until
from tests.factories import make_endpoint, make_event
from webhooks_project.logging import JsonFormatter

FORMATTER = JsonFormatter()
IDS = ("tenant_id", "event_id", "delivery_id", "endpoint_id")


def records(caplog, prefix: str) -> list[logging.LogRecord]:
    """The captured records whose unformatted message starts with `prefix`."""
    return [r for r in caplog.records if str(r.msg).startswith(prefix)]


def as_json(record: logging.LogRecord) -> tuple[str, dict]:
    """The record formatted by the JSON formatter: the line and its parsed object."""
    line = FORMATTER.format(record)
    return line, json.loads(line)


def assert_no_secret(line: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in line
        # The key part of a `whsec_<base64>` secret must not leak either.
        assert secret.removeprefix("whsec_") not in line


def test_json_formatter_writes_one_object_per_line_with_extra_fields():
    # given
    logger = logging.getLogger("webhooks.test")
    delivery_id = uuid.uuid4()
    record = logger.makeRecord(
        logger.name,
        logging.WARNING,
        __file__,
        1,
        "delivery %s attempt %d:\nsecond line",
        (delivery_id, 3),
        None,
        extra={
            "delivery_id": delivery_id,
            "attempt": 3,
            "outcome": "5xx",
            "status_code": 503,
            "duration_ms": 12,
        },
    )
    # when
    line = FORMATTER.format(record)
    # then
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "webhooks.test"
    assert entry["message"] == f"delivery {delivery_id} attempt 3:\nsecond line"
    assert entry["delivery_id"] == str(delivery_id)
    assert entry["attempt"] == 3
    assert entry["outcome"] == "5xx"
    assert entry["status_code"] == 503
    assert entry["duration_ms"] == 12
    assert entry["time"].endswith("Z")
    when = datetime.fromisoformat(entry["time"])
    assert when.utcoffset().total_seconds() == 0
    assert abs(when.timestamp() - record.created) < 0.001
    # Only the documented keys and the extras: no LogRecord internals.
    assert set(entry) == {
        "time",
        "level",
        "logger",
        "message",
        "delivery_id",
        "attempt",
        "outcome",
        "status_code",
        "duration_ms",
    }


def test_json_formatter_includes_exception_text():
    logger = logging.getLogger("webhooks.test")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            logger.name, logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    entry = json.loads(FORMATTER.format(record))
    assert entry["message"] == "failed"
    assert "ValueError: boom" in entry["exc_info"]
    assert "Traceback" in entry["exc_info"]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, without the test run's logging settings."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DJANGO_DEVELOPMENT", "DJANGO_DEBUG", "LOG_FORMAT", "LOG_LEVEL"}
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**clean, "DJANGO_SECRET_KEY": "test-only", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def settings_value(name: str, **env: str) -> subprocess.CompletedProcess:
    """Import the settings in a fresh interpreter with this environment."""
    return run_python(
        f"from webhooks_project import settings; print(settings.{name})", **env
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "json"),
        ({"DJANGO_DEVELOPMENT": "1"}, "text"),
        ({"DJANGO_DEBUG": "1"}, "text"),
        ({"DJANGO_DEVELOPMENT": "1", "LOG_FORMAT": "json"}, "json"),
        ({"LOG_FORMAT": "TEXT"}, "text"),
    ],
)
def test_log_format_default_and_override(env, expected):
    result = settings_value("LOGGING['handlers']['console']['formatter']", **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_log_format_unknown_value_fails_loudly():
    result = settings_value("LOG_FORMAT", LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT must be json or text" in result.stderr


def test_log_level_unknown_value_fails_loudly():
    result = settings_value("LOG_LEVEL", LOG_LEVEL="verbose")
    assert result.returncode != 0
    assert "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL" in result.stderr
    assert settings_value("LOG_LEVEL", LOG_LEVEL="warning").stdout.strip() == "WARNING"


def test_celery_keeps_django_logging():
    from django.conf import settings

    from webhooks_project.celery import app

    assert settings.CELERY_WORKER_HIJACK_ROOT_LOGGER is False
    assert app.conf.worker_hijack_root_logger is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, logging.INFO), ({"LOG_LEVEL": "warning"}, logging.WARNING)],
)
def test_celery_loglevel_gives_way_to_log_level(env, expected):
    # given: a worker or beat started with `--loglevel DEBUG` (Celery sets up its
    # logging with that level, as both do on start)
    code = (
        "import logging, django; django.setup();"
        "from webhooks_project.celery import app;"
        "app.log.setup_logging_subsystem(loglevel='DEBUG');"
        "print(logging.getLogger().level)"
    )
    result = run_python(code, **env)
    # then: the root level is LOG_LEVEL's (INFO by default), not Celery's
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip().splitlines()[-1]) == expected


@pytest.mark.django_db
def test_delivery_attempt_logs_one_record_with_ids(
    issued_key, tenant, receiver, caplog
):
    # given
    endpoint = make_endpoint(tenant=tenant, url=receiver.url)
    event, [delivery] = make_event(tenant=tenant)
    # when
    with caplog.at_level(logging.INFO, logger="deliveries"):
        delivery_run(delivery_id=delivery.pk)
    # then
    [record] = records(caplog, "delivery %s attempt %d")
    line, entry = as_json(record)
    assert entry["logger"] == "deliveries.services.recording"
    assert entry["level"] == "INFO"
    assert entry["delivery_id"] == str(delivery.pk)
    assert entry["endpoint_id"] == str(endpoint.pk)
    assert entry["event_id"] == str(event.pk)
    assert entry["tenant_id"] == str(tenant.pk)
    assert entry["attempt"] == 1
    assert entry["outcome"] == "success"
    assert entry["status_code"] == 200
    assert isinstance(entry["duration_ms"], int)
    assert entry["delivery_status"] == DeliveryStatus.SUCCEEDED
    assert str(delivery.pk) in entry["message"]
    [request] = receiver.received
    assert_no_secret(
        line, endpoint.secret, issued_key.key, request.header("webhook-signature")
    )


@pytest.mark.django_db
def test_failed_attempt_log_record_carries_status_code(tenant, receiver, caplog):
    receiver.set_statuses([503])
    endpoint = make_endpoint(tenant=tenant, url=receiver.url)
    _, [delivery] = make_event(tenant=tenant)
    with caplog.at_level(logging.INFO, logger="deliveries"):
        delivery_run(delivery_id=delivery.pk)
    [record] = records(caplog, "delivery %s attempt %d")
    line, entry = as_json(record)
    assert entry["outcome"] == "5xx"
    assert entry["status_code"] == 503
    assert entry["delivery_status"] == DeliveryStatus.FAILED
    assert_no_secret(line, endpoint.secret)


@pytest.mark.django_db
def test_dead_letter_log_record_carries_ids(tenant, receiver, caplog):
    endpoint = make_endpoint(tenant=tenant, url=receiver.url)
    event, [delivery] = make_event(tenant=tenant)
    Endpoint.objects.filter(pk=endpoint.pk).update(
        is_active=False, disabled_reason="manual"
    )
    with caplog.at_level(logging.INFO, logger="deliveries"):
        delivery_run(delivery_id=delivery.pk)
    [record] = records(caplog, "delivery %s dead-lettered")
    line, entry = as_json(record)
    assert entry["delivery_id"] == str(delivery.pk)
    assert entry["endpoint_id"] == str(endpoint.pk)
    assert entry["event_id"] == str(event.pk)
    assert entry["tenant_id"] == str(tenant.pk)
    assert entry["outcome"] == "dead_letter"
    assert "manual" in entry["reason"]
    assert_no_secret(line, endpoint.secret)


@pytest.mark.django_db
def test_ingest_logs_accepted_event(tenant, caplog):
    endpoint = make_endpoint(tenant=tenant)
    make_endpoint(tenant=tenant, event_types=["invoice.*"])
    with caplog.at_level(logging.INFO, logger="deliveries"):
        event, deliveries = make_event(tenant=tenant, event_type="order.created")
    [record] = records(caplog, "event %s accepted")
    line, entry = as_json(record)
    assert entry["tenant_id"] == str(tenant.pk)
    assert entry["event_id"] == str(event.pk)
    assert entry["event_type"] == "order.created"
    assert entry["deliveries"] == len(deliveries) == 1
    assert_no_secret(line, endpoint.secret)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_worker_writes_json_log_lines(tenant, receiver, worker_factory):
    # given: a real worker with JSON logs
    worker = worker_factory(LOG_FORMAT="json")
    endpoint = make_endpoint(tenant=tenant, url=receiver.url)
    # when
    _, [delivery] = make_event(tenant=tenant)

    # then: the worker's attempt line is a JSON object with the ids
    def attempt_line():
        for line in worker.log_path.read_text().splitlines():
            if line.startswith("{") and str(delivery.pk) in line:
                entry = json.loads(line)
                if entry.get("logger") == "deliveries.services.recording":
                    return entry
        return None

    entry = wait_until(attempt_line)
    assert entry["delivery_id"] == str(delivery.pk)
    assert entry["endpoint_id"] == str(endpoint.pk)
    assert entry["outcome"] == "success"
    # Celery's own records go through the same formatter.
    lines = worker.log_path.read_text().splitlines()
    celery_entries = [
        json.loads(line)
        for line in lines
        if line.startswith("{") and '"logger": "celery.' in line
    ]
    assert any(e["message"].endswith(" ready.") for e in celery_entries)
    assert endpoint.secret not in worker.log_path.read_text()
