"""The portal's pages, under /portal/ (with or without a trailing slash)."""

from django.urls import re_path

from portal.views import (
    deliveries,
    endpoint_actions,
    endpoints,
    event_types,
    session,
)
from webhooks_project.api import UUID_PATTERN

app_name = "portal"

ENDPOINT = rf"^endpoints/(?P<endpoint_id>{UUID_PATTERN})"
DELIVERY = rf"{ENDPOINT}/deliveries/(?P<delivery_id>{UUID_PATTERN})"

urlpatterns = [
    re_path(r"^enter/(?P<token>[A-Za-z0-9_-]{1,128})/?$", session.enter, name="enter"),
    re_path(r"^leave/?$", session.leave, name="leave"),
    re_path(r"^$", endpoints.endpoint_list, name="endpoints"),
    re_path(r"^event-types/?$", event_types.event_type_list, name="event-types"),
    re_path(r"^endpoints/new/?$", endpoints.endpoint_new, name="endpoint-new"),
    re_path(rf"{ENDPOINT}/?$", endpoints.endpoint_detail, name="endpoint"),
    re_path(rf"{ENDPOINT}/edit/?$", endpoints.endpoint_edit, name="endpoint-edit"),
    re_path(rf"{ENDPOINT}/pause/?$", endpoints.endpoint_pause, name="endpoint-pause"),
    re_path(
        rf"{ENDPOINT}/resume/?$", endpoints.endpoint_resume, name="endpoint-resume"
    ),
    re_path(
        rf"{ENDPOINT}/delete/?$", endpoints.endpoint_remove, name="endpoint-delete"
    ),
    re_path(
        rf"{ENDPOINT}/secret/?$",
        endpoint_actions.endpoint_secret,
        name="endpoint-secret",
    ),
    re_path(
        rf"{ENDPOINT}/secret/rotate/?$",
        endpoint_actions.endpoint_rotate,
        name="endpoint-rotate",
    ),
    re_path(
        rf"{ENDPOINT}/test/?$", endpoint_actions.endpoint_test, name="endpoint-test"
    ),
    re_path(
        rf"{ENDPOINT}/recover/?$",
        endpoint_actions.endpoint_recover_window,
        name="endpoint-recover",
    ),
    re_path(
        rf"{ENDPOINT}/replay/?$",
        endpoint_actions.endpoint_replay,
        name="endpoint-replay",
    ),
    re_path(rf"{DELIVERY}/?$", deliveries.delivery_detail, name="delivery"),
    re_path(rf"{DELIVERY}/retry/?$", deliveries.delivery_retry, name="delivery-retry"),
]
