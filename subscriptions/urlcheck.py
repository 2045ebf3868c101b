"""Validation of endpoint URLs: scheme, length, shape and the outbound policy."""

import socket
from urllib.parse import urlsplit

from deliveries.netpolicy import BlockedAddress, host_error, resolve

MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = ("http", "https")


def url_host(url: str) -> str:
    """The URL's host as deliveries read it (lowercase, brackets removed)."""
    try:
        return (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""


def url_error(url: str) -> str | None:
    """Why deliveries cannot go to `url`, or None when it is acceptable.

    A name that does not resolve now is accepted (its deliveries fail and retry
    until it does); one that resolves to a blocked address is refused.
    """
    if len(url) > MAX_URL_LENGTH:
        return f"URL longer than {MAX_URL_LENGTH} characters."
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"Invalid URL: {exc}."
    if parts.scheme not in ALLOWED_SCHEMES:
        return "URL scheme must be http or https."
    if not parts.hostname:
        return "URL must have a host."
    if parts.username is not None or parts.password is not None:
        return "URL must not carry credentials; use the endpoint's headers."
    if any(char.isspace() for char in url):
        return "URL must not contain whitespace."
    invalid_host = host_error(parts.hostname)
    if invalid_host is not None:
        return f"URL host {invalid_host}."
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        resolve(parts.hostname, port)
    except BlockedAddress as exc:
        return f"URL is not allowed by the outbound address policy: {exc}."
    except (socket.gaierror, UnicodeError, OSError):
        return None
    return None
