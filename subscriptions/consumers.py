"""Consumers: the producer's own customers, named by the producer's id for them."""

import re

CONSUMER_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
CONSUMER_MAX_LENGTH = 128


def consumer_error(value: str) -> str | None:
    """Why `value` is not a valid consumer id, or None."""
    if isinstance(value, str) and CONSUMER_RE.fullmatch(value):
        return None
    return "Use 1-128 characters of letters, digits and _ . : -"
