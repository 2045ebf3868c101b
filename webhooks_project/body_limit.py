"""413 for any request body over its limit, before anything reads it.

The API's limit is WEBHOOK_MAX_PAYLOAD_BYTES (WEBHOOK_MAX_BATCH_BYTES for batch
publishing, whose items each keep the first); every other page (admin) has
Django's DATA_UPLOAD_MAX_MEMORY_SIZE. Checked on the declared length, first in
the middleware chain: Django would otherwise answer a body past its own upload
limit with a bare 400 from whichever part read it first.
"""

from django.conf import settings
from django.http import HttpResponse, JsonResponse

API_PREFIX = "/api/"
BATCH_PATHS = ("/api/v1/events/batch", "/api/v1/events/batch/")


def body_limit(path: str) -> int:
    """The most bytes a request body to `path` may hold."""
    if path in BATCH_PATHS:
        return settings.WEBHOOK_MAX_BATCH_BYTES
    if path.startswith(API_PREFIX):
        return settings.WEBHOOK_MAX_PAYLOAD_BYTES
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


class RequestBodyLimitMiddleware:
    """Answer 413 to a request whose Content-Length is over its path's limit."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        """413 (JSON under /api/) or the response of the rest of the chain."""
        limit = body_limit(request.path)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django reads no body then
        if length <= limit:
            return self.get_response(request)
        message = f"Request body exceeds {limit} bytes."
        if request.path.startswith(API_PREFIX):
            return JsonResponse({"detail": message}, status=413)
        return HttpResponse(message, status=413, content_type="text/plain")
