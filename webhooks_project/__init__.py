"""The webhooks project: loads the Celery app with Django."""

from webhooks_project.celery import app as celery_app

__all__ = ("celery_app",)
