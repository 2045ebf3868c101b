"""Shared by the scale tests: the processes a test starts, and their environment."""

import os
import re
from datetime import datetime

import pytest

from tests.conftest import (
    LOOPBACK,
    test_database_url,
)
from tests.scale.hosts import (
    stop_all,
)


def process_env(**extra: str) -> dict[str, str]:
    """A worker's or beat's environment, against this run's test database."""
    return {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "DJANGO_DEVELOPMENT": "1",
        "WEBHOOK_ALLOWED_NETWORKS": ",".join(LOOPBACK),
        **extra,
    }


@pytest.fixture
def processes():
    """The processes a test starts (append before starting); stopped by pid."""
    started: list = []
    yield started
    stop_all(started, timeout=20)


LOG_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}")


def log_time(line: str) -> datetime:
    """When a log line (text format: `2026-12-08 10:00:00,123 ...`) was written."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def log_times(text: str, needle: str) -> list[datetime]:
    """When each log line holding `needle` was written."""
    return [
        log_time(line)
        for line in text.splitlines()
        if needle in line and LOG_TIME.match(line)
    ]
