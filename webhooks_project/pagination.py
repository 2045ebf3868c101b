"""Pagination classes: page numbers for small lists, cursors for large ones."""

from rest_framework import pagination

MAX_PAGE_SIZE = 200
PAGE_SIZE_DESCRIPTION = (
    f"Results per page, at most {MAX_PAGE_SIZE} (a larger value is capped; "
    "an invalid one is ignored)."
)


def _with_links_required(schema: dict) -> dict:
    """`next` and `previous` are always present (null at the ends)."""
    schema["required"] = sorted({*schema.get("required", ()), "next", "previous"})
    return schema


class PageNumberPagination(pagination.PageNumberPagination):
    """Page numbers with a client-chosen, bounded page size."""

    page_size_query_param = "limit"
    page_size_query_description = PAGE_SIZE_DESCRIPTION
    max_page_size = MAX_PAGE_SIZE

    def get_paginated_response_schema(self, schema):
        """`{count, next, previous, results}`."""
        return _with_links_required(super().get_paginated_response_schema(schema))


class CursorPagination(pagination.CursorPagination):
    """Keyset pagination by time-ordered id, newest first."""

    ordering = "-id"
    page_size_query_param = "limit"
    page_size_query_description = PAGE_SIZE_DESCRIPTION
    max_page_size = MAX_PAGE_SIZE

    def get_paginated_response_schema(self, schema):
        """`{next, previous, results}`."""
        return _with_links_required(super().get_paginated_response_schema(schema))
