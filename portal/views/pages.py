"""What every portal page shares: the endpoint lookup, rendering, paging."""

from dataclasses import dataclass

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from portal.selectors import portal_endpoint_get
from subscriptions.models import Endpoint

PAGE_SIZE = 25
# Deliveries are paged by offset; past this page the offset scan costs too much
# for a page nobody reads (an older window: recover, or the API).
MAX_PAGE = 400


def portal_render(
    request: HttpRequest, template: str, context: dict | None = None, status: int = 200
) -> HttpResponse:
    """Render a portal page with the session in its context."""
    portal = request.portal
    base = {"portal": portal, "can_change": not portal.read_only}
    return render(request, template, {**base, **(context or {})}, status=status)


def endpoint_or_404(request: HttpRequest, endpoint_id) -> Endpoint:
    """The consumer's endpoint `endpoint_id`; any other id is a 404."""
    endpoint = portal_endpoint_get(portal=request.portal, endpoint_id=endpoint_id)
    if endpoint is None:
        raise Http404
    return endpoint


@dataclass(frozen=True)
class Page:
    """One page of a list paged by offset, without counting the whole list."""

    rows: list
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        """Whether a page comes before this one."""
        return self.number > 1


def page_of(queryset, request: HttpRequest) -> Page:
    """The page `?page=N` of `queryset` (1 when missing or out of range)."""
    try:
        number = min(max(int(request.GET.get("page", 1)), 1), MAX_PAGE)
    except ValueError:
        number = 1
    start = (number - 1) * PAGE_SIZE
    rows = list(queryset[start : start + PAGE_SIZE + 1])
    has_next = len(rows) > PAGE_SIZE and number < MAX_PAGE
    return Page(rows=rows[:PAGE_SIZE], number=number, has_next=has_next)
