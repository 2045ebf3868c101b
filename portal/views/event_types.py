"""The tenant's event types, as a consumer reads them: description, schema, example."""

import json

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from portal.access import portal_page
from portal.selectors import portal_event_types
from portal.views.pages import portal_render


@require_safe
@portal_page
def event_type_list(request: HttpRequest) -> HttpResponse:
    """The event types the tenant publishes (deprecated ones left out), read-only."""
    shown = [
        {
            "name": event_type.name,
            "description": event_type.description,
            "schema": _indented(event_type.schema),
            "example": _indented(event_type.example),
        }
        for event_type in portal_event_types(portal=request.portal)
    ]
    return portal_render(request, "portal/event_types.html", {"event_types": shown})


def _indented(value) -> str | None:
    return None if value is None else json.dumps(value, indent=2, ensure_ascii=False)
