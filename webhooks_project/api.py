"""Shared API helpers: the calling tenant, router settings and query parsing."""

import uuid
from datetime import datetime

from django.utils.dateparse import parse_datetime
from django.utils.timezone import is_naive, make_aware
from rest_framework import routers
from rest_framework.exceptions import ValidationError

# Ids in paths are UUIDs; anything else is a 404 from the URL resolver.
UUID_PATTERN = (
    "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


class Router(routers.SimpleRouter):
    """Routes that answer with and without a trailing slash, without redirects."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


class TenantScopedMixin:
    """Views acting for the tenant behind the API key."""

    lookup_value_regex = UUID_PATTERN

    @property
    def tenant(self):
        """The authenticated tenant."""
        return self.request.user.tenant


def query_uuid(params, name: str) -> uuid.UUID | None:
    """A UUID query parameter, or None; 400 when malformed."""
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise ValidationError({name: ["Must be a valid UUID."]}) from exc


def query_datetime(params, name: str) -> datetime | None:
    """An ISO 8601 query parameter, or None; 400 when malformed."""
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = parse_datetime(raw.replace(" ", "+"))
    except ValueError:
        value = None
    if value is None:
        raise ValidationError({name: ["Must be an ISO 8601 date-time."]})
    return make_aware(value) if is_naive(value) else value
