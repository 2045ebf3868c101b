"""A POST ready to go: the URL checked by the address policy, the address pinned.

`prepare` resolves the host once and checks every answer; the request then
connects to the checked address only (libcurl's CONNECT_TO), while the URL keeps
the name for the Host header, SNI and certificate verification. A DNS answer that
changes between the check and the connect therefore cannot reach a blocked host.
The pin matches any host and port: whatever host text libcurl reads from the URL
(it decodes percent-escapes, for one), it connects to the checked address.
"""

import functools
import socket
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from deliveries.models import AttemptOutcome
from deliveries.netpolicy import BlockedAddress, ResolvedTarget, lookup_name, resolve
from deliveries.resolver import lookup_later
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
    # libcurl CONNECT_TO entries ("host:port:address:port"): `pinned_to`.
    connect_to: list[str]
    https: bool
    started: float = field(default_factory=time.monotonic)


def lookup_started(url: str, *, owner: str = "") -> Future | None:
    """Start looking up the URL's host name; None if there is nothing to look up.

    The future is done by the connect timeout at the latest; hand it to
    `prepare` as `looked_up` once it is. `owner`: the tenant it is for (each
    tenant has its share of the lookups in flight).
    """
    _, hostname, port, _ = _parsed(url)
    name = lookup_name(hostname)
    return None if name is None else lookup_later(name, port, owner=owner)


def prepare(
    *,
    url: str,
    body: bytes,
    headers: dict[str, str],
    looked_up: Future | None = None,
    started: float | None = None,
    owner: str = "",
) -> Request | TransportResult:
    """Check the destination and build the request; a result if it may not go.

    Never raises for a blocked or unresolvable destination: those come back as
    a TransportResult (outcome `blocked` or `connection_error`). `looked_up`: the
    done `lookup_started(url)`; without it the name is looked up here.
    `started` (monotonic): when the lookup began, so that durations include it.
    `owner`: the tenant whose share of lookups a lookup here uses.
    """
    if started is None:
        started = time.monotonic()
    target_url, hostname, port, https = _parsed(url)
    try:
        target = resolve(hostname, port, looked_up=looked_up, owner=owner)
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
    lines = [f"{name}: {value}".encode() for name, value in headers.items()]
    lines += [b"Accept-Encoding: identity", *(h.encode() for h in _SUPPRESSED)]
    return Request(
        url=target_url,
        body=body,
        header_lines=lines,
        connect_to=pinned_to(target, port),
        https=https,
        started=started,
    )


def pinned_to(target: ResolvedTarget, port: int) -> list[str]:
    """CONNECT_TO entries that send any host and port to the checked address."""
    address = target.address
    if target.family == socket.AF_INET6:
        address = f"[{address}]"
    return [f"::{address}:{port}"]


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> tuple[str, str, int, bool]:
    """The URL to request (no userinfo, no fragment), host, port and https."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    netloc = parts.netloc.rpartition("@")[2]  # never send userinfo as credentials
    clean = urlunsplit(parts._replace(netloc=netloc, fragment=""))
    return clean, parts.hostname or "", parts.port or (443 if https else 80), https
