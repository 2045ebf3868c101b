"""API errors: Django validation errors as 400s, extra headers, JSON 400/404s.

A database that does not answer is a 503 with `Retry-After`, never a 500: the
producer retries with the same `Idempotency-Key` and nothing is lost or doubled.
"""

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

logger = logging.getLogger(__name__)

# Seconds a producer should wait before retrying while the database is away.
UNAVAILABLE_RETRY_AFTER = 5


def exception_handler(exc, context):
    """Map Django ValidationError to DRF's, defer to DRF, add `exc.headers`."""
    if isinstance(exc, OperationalError | InterfaceError):
        return _database_unavailable(exc)
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            detail = exc.message_dict
        else:
            # A standard body (field -> messages), never a bare list.
            detail = {api_settings.NON_FIELD_ERRORS_KEY: exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    response = drf_exception_handler(exc, context)
    extra_headers = getattr(exc, "headers", None)
    if response is not None and extra_headers:
        for name, value in extra_headers.items():
            response[name] = value
    return response


def _database_unavailable(exc: Exception) -> Response:
    logger.warning("database unavailable, answering 503: %s", exc)
    set_rollback()
    return Response(
        {"detail": "Service temporarily unavailable: the database did not answer."},
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
    )


def bad_request(request, exception=None):
    """400 raised outside DRF (a disallowed Host): JSON under /api/."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Bad request."}, status=400)
    return defaults.bad_request(request, exception)


def not_found(request, exception=None):
    """404 for URLs no route matches: JSON under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)
