"""WSGI entry point for gunicorn."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")

application = get_wsgi_application()

from webhooks_project.metrics import warn_if_alone  # noqa: E402 (Django set up first)

warn_if_alone("web process")
