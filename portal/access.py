"""Who a portal request acts for: the session a link opened, checked on each page.

The browser's Django session holds the portal session's id only. Every page
reads that session again, so an expiry, an early end in the admin or a
deactivated tenant takes effect on the next click; a read-only session may look
at everything and change nothing (every unsafe method answers 403).
"""

from functools import wraps

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from portal.models import PortalSession
from portal.selectors import portal_session_active, portal_session_get

# The key under which the browser's Django session holds the portal session id.
SESSION_KEY = "portal_session_id"
SAFE_METHODS = ("GET", "HEAD")


def denied(
    request: HttpRequest,
    *,
    title: str,
    message: str,
    status: int = 403,
    portal: PortalSession | None = None,
) -> HttpResponse:
    """A styled error page (403 or 404) of the portal."""
    context = {"title": title, "message": message, "portal": portal}
    return render(request, "portal/denied.html", context, status=status)


def expired_page(request: HttpRequest, portal: PortalSession | None) -> HttpResponse:
    """403: the link or the session has expired (or was ended early)."""
    return denied(
        request,
        title="This link has expired",
        message="Portal links open once, in one browser, for a limited time. "
        f"Ask {_producer(portal)} for a new link to manage your webhooks.",
    )


def _producer(portal: PortalSession | None) -> str:
    return portal.tenant.name if portal is not None else "your provider"


def read_only_page(request: HttpRequest, portal: PortalSession) -> HttpResponse:
    """403: a read-only session asked for a change."""
    return denied(
        request,
        title="Read-only session",
        message="This portal link lets you look, not change anything. "
        f"Ask {portal.tenant.name} for a link that allows changes.",
        portal=portal,
    )


def for_changes(view):
    """A page that exists only to change something (a form): 403 when read-only,
    whatever the method. Goes under `portal_page`."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.portal.read_only:
            return read_only_page(request, request.portal)
        return view(request, *args, **kwargs)

    return wrapped


def portal_page(view):
    """A portal view: 403 without a live portal session, or for a change made in a
    read-only one; a 404 inside it is the portal's styled page."""

    @never_cache
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        session_id = request.session.get(SESSION_KEY)
        if session_id is None:
            # The session cookie expires with the portal session: a browser
            # past the expiry no longer says which session it had.
            return expired_page(request, None)
        portal = portal_session_active(session_id=session_id)
        if portal is None:
            return expired_page(request, portal_session_get(session_id=session_id))
        if request.method not in SAFE_METHODS and portal.read_only:
            return read_only_page(request, portal)
        request.portal = portal
        try:
            return view(request, *args, **kwargs)
        except Http404:
            return denied(
                request,
                title="Not found",
                message="There is nothing here, or it is not yours to see.",
                status=404,
                portal=portal,
            )

    return wrapped
