"""What an attempt's record keeps of its exchange: redacted, bounded headers and body.

A receiver chooses its response and a tenant its endpoint's headers: neither may
grow the attempts table past a fixed size per attempt, and credentials sent to
the receiver are never written down.
"""

import re

REDACTED = "[redacted]"
# Header names that carry credentials, by pattern: their values are not stored.
_CREDENTIAL_NAME = re.compile(
    r"auth|token|secret|key|cookie|passw|session|credential", re.IGNORECASE
)
# Most headers and bytes (names and values) stored per attempt and direction.
MAX_STORED_HEADERS = 100
MAX_STORED_HEADER_BYTES = 8 * 1024
# Most bytes of a response body kept on an attempt record (the contract's 16 KiB).
STORED_BODY_BYTES = 16 * 1024
# The entry that says what was left out: no real header name holds brackets.
TRUNCATED = "[truncated]"


def stored_headers(headers: dict[str, str]) -> dict[str, str]:
    """`headers` as an attempt record keeps them: credentials redacted, bounded.

    Headers are kept in order while they fit MAX_STORED_HEADERS and
    MAX_STORED_HEADER_BYTES; the rest are counted under TRUNCATED.
    """
    kept: dict[str, str] = {}
    size = 0
    left_out = left_out_bytes = 0
    for name, value in headers.items():
        if _CREDENTIAL_NAME.search(name):
            value = REDACTED
        cost = len(name) + len(value)
        if len(kept) < MAX_STORED_HEADERS and size + cost <= MAX_STORED_HEADER_BYTES:
            kept[name] = value
            size += cost
        else:
            left_out += 1
            left_out_bytes += cost
    if left_out:
        kept[TRUNCATED] = f"{left_out} more headers ({left_out_bytes} bytes) not kept"
    return kept


def stored_body(body: bytes) -> str:
    """The first STORED_BODY_BYTES of a response body, as text."""
    text = body[:STORED_BODY_BYTES].decode("utf-8", "replace")
    return text.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL
