"""A strict JSON parser: malformed bodies, NaN, numbers beyond a float and lone
surrogates are 400s.

Oversized bodies never reach it: webhooks_project.body_limit answers 413 first.
"""

import json
import math
import re

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# A `\uD800`-`\uDFFF` escape: the only way a lone surrogate gets into parsed JSON.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class StrictJSONParser(JSONParser):
    """Parse strictly (the body's size is bounded by the middleware)."""

    def parse(self, stream, media_type=None, parser_context=None):
        """Return the parsed JSON body or raise 400."""
        raw = stream.read() if stream is not None else b""
        try:
            text = raw.decode("utf-8")
            data = strict_loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(data):
            # Valid JSON syntax, but no text column or UTF-8 body can hold it.
            raise ParseError("JSON parse error - a string escapes a lone surrogate.")
        return data


class StrictJSONDecoder(json.JSONDecoder):
    """Refuses NaN, Infinity and numbers beyond a float with ValueError: no JSON
    output, and no jsonb column, can hold them. For forms' JSON fields too."""

    def __init__(self, **kwargs):
        kwargs.setdefault("parse_constant", _reject_constant)
        kwargs.setdefault("parse_float", _finite_float)
        super().__init__(**kwargs)


def strict_loads(text: str):
    """Parse JSON text as the API does (StrictJSONDecoder)."""
    return json.loads(text, cls=StrictJSONDecoder)


def _reject_constant(name: str):
    """Refuse NaN and Infinity, which are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """A JSON number as a float, refusing one beyond a float's range (1e400),
    which Python would read as an infinity that no JSON output can hold."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _has_lone_surrogate(data) -> bool:
    """Whether any key or string in `data` is not encodable as UTF-8."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False
