"""A POST ready to go: the URL checked by the address policy, the address pinned.

`prepare` resolves the host once and checks every answer; the request then
connects to the checked address only (libcurl's CONNECT_TO), while the URL keeps
the name for the Host header, SNI and certificate verification. A DNS answer that
changes between the check and the connect therefore cannot reach a blocked host.
"""

import functools
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from deliveries.models import AttemptOutcome
from deliveries.netpolicy import BlockedAddress, parse_ip_literal, resolve
from deliveries.transport.result import TransportResult, elapsed_ms

# Request headers curl would add by itself; an empty value drops them, so the
# receiver sees what the platform chose (no 100-continue round trip either).
_SUPPRESSED = ("Expect:", "Accept:")


@dataclass(frozen=True, slots=True)
class Request:
    """One POST to a checked address: what a curl handle needs to send it."""

    url: str
    body: bytes
    header_lines: list[bytes]
    # libcurl CONNECT_TO entries ("host:port:address:port"); empty for a literal.
    connect_to: list[str]
    https: bool
    started: float = field(default_factory=time.monotonic)


def is_literal(url: str) -> bool:
    """Whether the URL's host is an IP address (no DNS lookup to wait for)."""
    return parse_ip_literal(urlsplit(url).hostname or "") is not None


def prepare(
    *, url: str, body: bytes, headers: dict[str, str]
) -> Request | TransportResult:
    """Check the destination and build the request; a result if it may not go.

    Never raises for a blocked or unresolvable destination: those come back as
    a TransportResult (outcome `blocked` or `connection_error`).
    """
    started = time.monotonic()
    target_url, hostname, port, https = _parsed(url)
    try:
        target = resolve(hostname, port)
    except BlockedAddress as exc:
        return TransportResult(
            AttemptOutcome.BLOCKED, elapsed_ms(started), error=str(exc)
        )
    except (socket.gaierror, UnicodeError) as exc:
        return TransportResult(
            AttemptOutcome.CONNECTION_ERROR,
            elapsed_ms(started),
            error=f"DNS resolution failed: {exc}",
        )
    connect_to = []
    if parse_ip_literal(hostname) is None:
        address = target.address
        if target.family == socket.AF_INET6:
            address = f"[{address}]"
        connect_to = [f"{hostname}:{port}:{address}:{port}"]
    lines = [f"{name}: {value}".encode() for name, value in headers.items()]
    lines += [b"Accept-Encoding: identity", *(h.encode() for h in _SUPPRESSED)]
    return Request(
        url=target_url,
        body=body,
        header_lines=lines,
        connect_to=connect_to,
        https=https,
        started=started,
    )


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> tuple[str, str, int, bool]:
    """The URL to request (no userinfo, no fragment), host, port and https."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    netloc = parts.netloc.rpartition("@")[2]  # never send userinfo as credentials
    clean = urlunsplit(parts._replace(netloc=netloc, fragment=""))
    return clean, parts.hostname or "", parts.port or (443 if https else 80), https
