"""Celery tasks of the portal: thin wrappers around its services."""

import logging

from celery import shared_task

from portal.services import portal_sessions_purge

logger = logging.getLogger(__name__)


@shared_task(name="portal.purge_sessions", ignore_result=True)
def purge_sessions() -> int:
    """Delete long-expired portal sessions and expired browser sessions."""
    deleted = portal_sessions_purge()
    logger.info("deleted %d expired portal sessions", deleted)
    return deleted
