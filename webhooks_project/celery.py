"""The Celery application, configured from Django settings (CELERY_* names)."""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")

app = Celery("webhooks_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _worker_commit_mode(**kwargs) -> None:
    """Let workers commit without waiting for the WAL flush, unless told otherwise.

    A worker's writes (claims, attempt records, statuses) can be redone: if the
    database loses its last few hundred milliseconds in a crash, leases expire and
    the sweep delivers again, with the same webhook-id. Events are accepted by the
    web processes, whose commits stay synchronous. Waiting for the flush on every
    worker commit cost most of the delivery throughput on a slow disk.
    """
    from django.conf import settings
    from django.db import connections

    mode = settings.WEBHOOK_WORKER_SYNCHRONOUS_COMMIT
    options = connections["default"].settings_dict.setdefault("OPTIONS", {})
    extra = options.get("options", "")
    options["options"] = f"{extra} -c synchronous_commit={mode}".strip()
