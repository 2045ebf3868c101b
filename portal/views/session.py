"""Opening a portal link, and leaving the portal."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from portal.access import SESSION_KEY, denied, expired_page
from portal.services import (
    LinkRefusal,
    PortalLinkRefused,
    portal_link_check,
    portal_session_enter,
)


@require_http_methods(["GET", "HEAD", "POST"])
@never_cache
def enter(request: HttpRequest, token: str) -> HttpResponse:
    """Open a link once: a browser session for its consumer until it expires.

    GET only shows a button: link previews in chat and mail scanners fetch
    links they see, and must not use up a single-use link. The button's POST
    (CSRF-checked) opens it.
    """
    try:
        if request.method != "POST":
            portal = portal_link_check(token=token)
            return render(request, "portal/enter.html", {"link_to": portal})
        portal = portal_session_enter(token=token)
    except PortalLinkRefused as refused:
        if refused.reason == LinkRefusal.EXPIRED:
            return expired_page(request, refused.session)
        if refused.reason == LinkRefusal.USED:
            return denied(
                request,
                title="This link was already used",
                message="A portal link opens one browser session only. Ask "
                f"{refused.session.tenant.name} for a new link.",
            )
        return denied(
            request,
            title="This link is not valid",
            message="Check that you copied the whole link, or ask your provider "
            "for a new one.",
        )
    # A new session key: whatever the browser held before (a key planted by
    # someone else included) does not carry the portal's access.
    request.session.cycle_key()
    request.session[SESSION_KEY] = str(portal.pk)
    request.session.set_expiry(portal.expires_at)
    return redirect("portal:endpoints")


@require_POST
def leave(request: HttpRequest) -> HttpResponse:
    """End the portal session in this browser."""
    request.session.flush()
    return render(request, "portal/left.html")
