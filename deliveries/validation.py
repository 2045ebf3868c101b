"""Checks on event payloads that the JSON parser alone does not make."""

NUL = "\x00"
# Deepest nesting of objects and arrays in an event payload (400 past it).
MAX_PAYLOAD_DEPTH = 32


def payload_error(value, *, max_depth: int | None = None) -> str | None:
    """Why `value` cannot be stored as an event payload, or None.

    Refuses nesting of objects and arrays past `max_depth` levels (`{}` is one
    level, `{"a": {}}` two) and the NUL character in keys or strings, which
    PostgreSQL's jsonb cannot hold. Iterative, and it stops at the first level
    past the limit: a hostile payload costs no recursion.
    """
    max_depth = max_depth or MAX_PAYLOAD_DEPTH
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return "Strings cannot contain the NUL character (\\u0000)."
            if not _encodable(item):
                return "Strings cannot contain a lone surrogate (\\ud800-\\udfff)."
            continue
        if isinstance(item, dict):
            if any(NUL in key for key in item):
                return "Keys cannot contain the NUL character (\\u0000)."
            if not all(_encodable(key) for key in item):
                return "Keys cannot contain a lone surrogate (\\ud800-\\udfff)."
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return f"Nested more than {max_depth} levels deep."
        stack.extend((child, depth + 1) for child in children)
    return None


def _encodable(text: str) -> bool:
    """Whether `text` is valid Unicode (no lone surrogate), as UTF-8 and jsonb need."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
