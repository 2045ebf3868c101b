"""Root URLs: admin, API v1, OpenAPI schema and docs, health and readiness, the
consumer portal."""

from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from catalog.api.views import EventTypeViewSet
from deliveries.api.views import DeadLetterViewSet, DeliveryViewSet, EventViewSet
from deliveries.dashboard.views import dashboard_data, dashboard_page
from portal.api.views import PortalSessionViewSet
from subscriptions.api.views import EndpointViewSet
from tenants.api.views import ApiKeyViewSet
from webhooks_project.api import Router
from webhooks_project.health import health, ready
from webhooks_project.metrics import metrics_view

router = Router()
router.register("api-keys", ApiKeyViewSet, basename="api-key")
router.register("endpoints", EndpointViewSet, basename="endpoint")
router.register("events", EventViewSet, basename="event")
router.register("event-types", EventTypeViewSet, basename="event-type")
router.register("deliveries", DeliveryViewSet, basename="delivery")
router.register("dead-letters", DeadLetterViewSet, basename="dead-letter")
router.register("portal-sessions", PortalSessionViewSet, basename="portal-session")

# Under /api/, errors raised before DRF (unknown URLs, malformed ids, a disallowed
# Host) answer JSON like the rest of the API.
handler400 = "webhooks_project.exceptions.bad_request"
handler404 = "webhooks_project.exceptions.not_found"

# The admin index links to the live deliveries dashboard.
admin.site.index_template = "deliveries/admin_index.html"
admin.site.site_header = "Webhooks administration"
admin.site.site_title = "Webhooks admin"
# Nothing is served at "/": no "View site" link to a page that does not exist.
admin.site.site_url = None

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(router.urls)),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI's init script is a resource of its own (the split view), so the
    # Content-Security-Policy needs no inline script.
    re_path(
        r"^api/docs/?$",
        SpectacularSwaggerSplitView.as_view(
            url_name="schema", template_name="api_docs/swagger_ui.html"
        ),
        name="docs",
    ),
    # ReDoc styles itself with <style> elements it writes at run time
    # (styled-components), which a policy without inline styles refuses, and
    # builds its search index in a worker made from a blob: URL of its own code.
    # This page alone allows both; its scripts stay this deployment's files.
    re_path(
        r"^api/redoc/?$",
        csp_update({"style-src": [UNSAFE_INLINE], "worker-src": [SELF, "blob:"]})(
            SpectacularRedocView.as_view(
                url_name="schema", template_name="api_docs/redoc.html"
            )
        ),
        name="redoc",
    ),
    re_path(r"^health/?$", health, name="health"),
    re_path(r"^ready/?$", ready, name="ready"),
    re_path(r"^metrics/?$", metrics_view, name="metrics"),
    re_path(r"^dashboard/?$", dashboard_page, name="dashboard"),
    re_path(r"^dashboard/data\.json$", dashboard_data, name="dashboard-data"),
    path("portal/", include("portal.urls")),
]

if settings.DEVELOPMENT:
    # The benchmark's web-stack ceiling (bench/views.py): development only.
    from bench.views import BenchNoopView

    urlpatterns.append(re_path(r"^bench/noop/?$", BenchNoopView.as_view()))
