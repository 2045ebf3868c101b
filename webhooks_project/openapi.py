"""OpenAPI pieces shared by the API views: error responses and common headers."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

IDEMPOTENCY_HEADER = "Idempotency-Key"

# DRF's standard error body; invalid input may instead be field name -> messages.
_DETAIL = inline_serializer(
    name="ErrorDetail", fields={"detail": serializers.CharField()}
)

_ERRORS = {
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description="Invalid input (`detail`, or field name -> list of messages), "
        "or a malformed request such as a Host header not allowed.",
    ),
    401: OpenApiResponse(_DETAIL, description="Missing, wrong or revoked API key."),
    404: OpenApiResponse(
        _DETAIL,
        description="No such object of this tenant (another tenant's id "
        "included), or an invalid page or cursor.",
    ),
    409: OpenApiResponse(
        _DETAIL, description="The idempotency key was used with another body."
    ),
    413: OpenApiResponse(
        _DETAIL, description="The request body is over WEBHOOK_MAX_PAYLOAD_BYTES."
    ),
    415: OpenApiResponse(_DETAIL, description="The request body is not JSON."),
    429: OpenApiResponse(
        _DETAIL,
        description="Over the tenant's rate limit (event ingestion's, or the API "
        "calls' `WEBHOOK_API_RATE_LIMIT`): see `Retry-After`.",
    ),
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Documented error responses for `codes`, always with 400, 401 and 429."""
    return {code: _ERRORS[code] for code in sorted({400, 401, 429, *codes})}


def body_errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Error responses of an operation with a JSON body: 413, 415 and `codes`."""
    return errors(413, 415, *codes)


def idempotency_header() -> OpenApiParameter:
    """The optional `Idempotency-Key` request header of event ingestion."""
    return OpenApiParameter(
        IDEMPOTENCY_HEADER,
        {"type": "string", "minLength": 1, "maxLength": 255},
        OpenApiParameter.HEADER,
        description="A repeat with the same body answers 200 with the original "
        "event, with another body 409. The same as the `event_id` field.",
    )


def rate_limit_response_headers(*codes: int) -> list[OpenApiParameter]:
    """`RateLimit-*` response headers on `codes`, and `Retry-After` on 429."""
    described = (
        ("RateLimit-Limit", "The tenant's burst size.", codes),
        ("RateLimit-Remaining", "Events that may still be sent now.", codes),
        ("RateLimit-Reset", "Seconds until the bucket is full again.", codes),
        ("Retry-After", "Seconds to wait before sending again.", (429,)),
    )
    return [
        OpenApiParameter(
            name,
            OpenApiTypes.INT,
            OpenApiParameter.HEADER,
            description=description,
            response=list(statuses),
        )
        for name, description, statuses in described
    ]


def detail_response(description: str) -> OpenApiResponse:
    """A `{"detail": ...}` answer with its own description (a 409 of its kind)."""
    return OpenApiResponse(_DETAIL, description=description)
