"""Writes for portal sessions: issue a link, open it once, end sessions early,
purge old ones."""

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from importlib import import_module

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from portal.models import PortalSession
from tenants.models import Tenant

# Expired portal sessions are kept this long (the admin shows recent ones), then
# deleted by the hourly purge, at most PURGE_BATCH rows a run.
KEEP_EXPIRED = timedelta(days=7)
PURGE_BATCH = 10_000
# Bytes of randomness in a link's token (43 URL-safe characters).
TOKEN_BYTES = 32
DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 86_400


def token_hash(token: str) -> str:
    """The SHA-256 (hex) under which a link's token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedPortalSession:
    """A new portal session and its link token (shown once, never stored)."""

    session: PortalSession
    token: str


class LinkRefusal(enum.StrEnum):
    """Why a portal link opens nothing."""

    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"


class PortalLinkRefused(Exception):
    """The link is unknown, already used or expired (`reason`)."""

    def __init__(self, reason: LinkRefusal, session: PortalSession | None = None):
        super().__init__(reason.value)
        self.reason = reason
        self.session = session


def portal_session_create(
    *,
    tenant: Tenant,
    consumer: str,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    read_only: bool = False,
) -> IssuedPortalSession:
    """Issue a portal session for `consumer` of `tenant`, valid `ttl_seconds`.

    A consumer without endpoints yet is fine: the portal is where it adds them.
    """
    token = secrets.token_urlsafe(TOKEN_BYTES)
    session = PortalSession.objects.create(
        tenant=tenant,
        consumer=consumer,
        read_only=read_only,
        token_hash=token_hash(token),
        expires_at=timezone.now() + timedelta(seconds=ttl_seconds),
    )
    return IssuedPortalSession(session=session, token=token)


def portal_link_check(*, token: str) -> PortalSession:
    """The session a link would open, without using the link.

    Raises PortalLinkRefused as `portal_session_enter` would.
    """
    session = (
        PortalSession.objects.select_related("tenant")
        .filter(token_hash=token_hash(token))
        .first()
    )
    _refuse_unless_openable(session)
    return session


@transaction.atomic
def portal_session_enter(*, token: str) -> PortalSession:
    """Open a link: mark its session used and return it, once.

    Raises PortalLinkRefused for an unknown token, a link opened before (two
    browsers racing: the row lock lets one in) or an expired one.
    """
    session = (
        PortalSession.objects.select_for_update()
        .select_related("tenant")
        .filter(token_hash=token_hash(token))
        .first()
    )
    _refuse_unless_openable(session)
    session.used_at = timezone.now()
    session.save(update_fields=["used_at"])
    return session


def _refuse_unless_openable(session: PortalSession | None) -> None:
    if session is None or not session.tenant.is_active:
        raise PortalLinkRefused(LinkRefusal.UNKNOWN)
    if session.is_expired:
        raise PortalLinkRefused(LinkRefusal.EXPIRED, session)
    if session.used_at is not None:
        raise PortalLinkRefused(LinkRefusal.USED, session)


def portal_sessions_end(*, sessions: QuerySet[PortalSession]) -> int:
    """End sessions now (their links and pages answer 403); return how many."""
    now = timezone.now()
    return sessions.filter(expires_at__gt=now).update(expires_at=now)


def portal_sessions_purge() -> int:
    """Delete portal sessions expired over KEEP_EXPIRED ago (a bounded batch) and
    the browser sessions past their expiry; return how many portal sessions."""
    cutoff = timezone.now() - KEEP_EXPIRED
    old = PortalSession.objects.filter(expires_at__lt=cutoff).order_by("expires_at")
    ids = list(old.values_list("pk", flat=True)[:PURGE_BATCH])
    deleted = PortalSession.objects.filter(pk__in=ids).delete()[0]
    # Each opened link leaves a row in Django's session table; nothing else
    # clears the expired ones.
    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()
    return deleted
