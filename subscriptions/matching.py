"""What an endpoint receives: event-type names and filters (validation, the
patterns a type matches) and the SQL condition of its payload filter."""

import re

EVENT_TYPE_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,255}$")
WILDCARD = "*"
# Types the platform publishes itself (deliveries/services/platform_events.py);
# producers cannot publish them, whatever their case.
RESERVED_PREFIX = "platform."


def is_valid_event_type(value: str) -> bool:
    """Whether `value` is a valid event type name."""
    return EVENT_TYPE_RE.fullmatch(value) is not None


def is_reserved_event_type(value: str) -> bool:
    """Whether `value` is a platform type, which only the platform publishes."""
    return value[: len(RESERVED_PREFIX)].lower() == RESERVED_PREFIX


def filter_error(pattern: str) -> str | None:
    """Why `pattern` is not a valid event-type filter, or None.

    A filter is `*`, an exact type, or a prefix ending in `.*` (`order.*`).
    """
    if pattern == WILDCARD:
        return None
    if pattern.endswith(".*"):
        prefix = pattern[:-2]
        if prefix and is_valid_event_type(prefix + "."):
            return None
        return f"'{pattern}' is not a valid wildcard filter."
    if is_valid_event_type(pattern):
        return None
    return (
        f"'{pattern}' is not a valid event type: use 1-255 characters of "
        "[A-Za-z0-9_.:-], or a prefix ending in '.*'."
    )


def patterns_matching(event_type: str) -> list[str]:
    """Every filter that matches `event_type`: itself, `*`, and each `prefix.*`.

    `order.created.v2` is matched by `order.created.v2`, `*`, `order.*` and
    `order.created.*`; the fan-out asks the database for endpoints whose filter
    list overlaps these (a GIN-indexed `&&`).
    """
    patterns = [event_type, WILDCARD]
    for index, char in enumerate(event_type):
        if char == ".":
            patterns.append(event_type[: index + 1] + WILDCARD)
    return patterns


def filters_as_sql(filters: list[str]) -> tuple[list[str], list[str]]:
    """An endpoint's filters for SQL: (exact types, LIKE patterns of `prefix.*`).

    Both empty means every type (the endpoint has no filter). A prefix's `_`
    and `%` are escaped: in `order_v1.*` the `_` is a literal underscore, not
    LIKE's any-character.
    """
    if not filters or WILDCARD in filters:
        return [], []
    exacts, prefixes = [], []
    for pattern in filters:
        if pattern.endswith("." + WILDCARD):
            prefix = pattern[:-1]
            escaped = "".join("\\" + c if c in "\\%_" else c for c in prefix)
            prefixes.append(escaped + "%")
        else:
            exacts.append(pattern)
    return exacts, prefixes


def payload_filter_sql(*, endpoint: str, payload: str, wanted: str) -> str:
    """SQL condition: the endpoint row `endpoint` (an alias) takes the jsonb
    expression `payload`.

    True without a payload filter, else its compiled predicate decides
    (subscriptions.filters): true or false for every payload, never NULL or an
    error, so it cannot drop or fail a fan-out. The predicate costs microseconds,
    yet PostgreSQL rates `@@` as cheap as `=` and may check it before the other
    conditions: it runs only where `wanted` (the statement's other conditions on
    the endpoint, such as its event types) holds, which a CASE guarantees. For a
    statement parameter pass `%(payload)s::jsonb`: the server then parses it
    once, not once per endpoint.
    """
    column = f'{endpoint}."filter_path"'
    return (
        f"CASE WHEN {column} IS NULL THEN true "
        f"WHEN {wanted} THEN {payload} @@ {column} ELSE false END"
    )
