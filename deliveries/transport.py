"""Outbound HTTP: one POST to a checked address, returning a result, never raising.

No redirects, a connect timeout, a whole-response deadline and a capped body read.
The host name is resolved once and checked by the address policy; the connection
goes to that address (TLS still verifies the certificate for the name), so a DNS
answer that changes between the check and the connect cannot reach a blocked host.
Connections are pooled per worker thread.
"""

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from deliveries.deadline import Alarm, watchdog
from deliveries.models import AttemptOutcome
from deliveries.netpolicy import BlockedAddress, resolve
from deliveries.retry import is_success

logger = logging.getLogger(__name__)

_READ_CHUNK = 8192


@dataclass
class TransportResult:
    """What one POST produced: a status and response, or an error."""

    outcome: str
    duration_ms: int
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""

    @property
    def succeeded(self) -> bool:
        """Whether the receiver accepted the delivery."""
        return self.outcome == AttemptOutcome.SUCCESS


class _DeadlineExceeded(Exception):
    """The response took longer than the whole-response deadline."""


class _DeadlineMixin:
    """Arm the whole-response deadline once the request is sent."""

    def getresponse(self, *args, **kwargs):
        """Wait for the response under this thread's armed deadline."""
        seconds = getattr(_local, "deadline", None)
        if seconds is not None and self.sock is not None:
            _local.alarm = watchdog().arm(self.sock, seconds)
        return super().getresponse(*args, **kwargs)


class _DeadlineHTTPConnection(_DeadlineMixin, HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineMixin, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class PinnedAddressAdapter(HTTPAdapter):
    """An adapter whose TLS handshake uses the original host name, not the IP.

    Its connections arm the whole-response deadline (see deliveries.deadline).
    """

    def init_poolmanager(self, *args, **kwargs):
        """Use connection pools whose connections enforce the deadline."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _HTTPPool,
            "https": _HTTPSPool,
        }

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        """Add the checked host name for SNI and certificate verification."""
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        server_name = getattr(request, "server_hostname", None)
        if host_params["scheme"] == "https" and server_name:
            pool_kwargs["server_hostname"] = server_name
            pool_kwargs["assert_hostname"] = server_name
        return host_params, pool_kwargs


_local = threading.local()


def _session() -> requests.Session:
    """This thread's session (its own connection pool)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.trust_env = False  # never route deliveries through env proxies
        adapter = PinnedAddressAdapter(
            pool_connections=64, pool_maxsize=4, max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session = session
    return session


def _pinned_url(url: str, address: str) -> tuple[str, str, str]:
    """Return (url with the IP, Host header value, host name)."""
    parts = urlsplit(url)
    hostname = parts.hostname or ""
    ip_host = f"[{address}]" if ":" in address else address
    netloc = f"{ip_host}:{parts.port}" if parts.port else ip_host
    host_header = parts.netloc.rpartition("@")[2]
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return pinned, host_header, hostname


def post(*, url: str, body: bytes, headers: dict[str, str]) -> TransportResult:
    """POST `body` to `url` under the address policy; never raises on failure."""
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    _local.deadline = settings.WEBHOOK_RESPONSE_TIMEOUT
    _local.alarm = None
    try:
        result = _post(url=url, body=body, headers=headers, started=started)
    except BlockedAddress as exc:
        return TransportResult(AttemptOutcome.BLOCKED, elapsed_ms(), error=str(exc))
    except socket.gaierror as exc:
        return TransportResult(
            AttemptOutcome.CONNECTION_ERROR,
            elapsed_ms(),
            error=f"DNS resolution failed: {exc}",
        )
    except requests.ConnectTimeout:
        return TransportResult(
            AttemptOutcome.TIMEOUT,
            elapsed_ms(),
            error=f"connect timeout after {settings.WEBHOOK_CONNECT_TIMEOUT:g} s",
        )
    except (TimeoutError, requests.ReadTimeout, _DeadlineExceeded):
        return _timeout(elapsed_ms())
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        if _deadline_fired():
            return _timeout(elapsed_ms())
        return TransportResult(
            AttemptOutcome.CONNECTION_ERROR,
            elapsed_ms(),
            error=f"{type(exc).__name__}: {exc}"[:2000],
        )
    finally:
        _local.deadline = None
        alarm: Alarm | None = _local.alarm
        if alarm is not None:
            watchdog().disarm(alarm)
    if _deadline_fired():
        # The cut came after a complete-looking response: it was still too late.
        return _timeout(result.duration_ms)
    return result


def _deadline_fired() -> bool:
    alarm: Alarm | None = getattr(_local, "alarm", None)
    return alarm is not None and alarm.fired


def _timeout(duration_ms: int) -> TransportResult:
    return TransportResult(
        AttemptOutcome.TIMEOUT,
        duration_ms,
        error=f"no response within {settings.WEBHOOK_RESPONSE_TIMEOUT:g} s",
    )


def _post(
    *, url: str, body: bytes, headers: dict[str, str], started: float
) -> TransportResult:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = resolve(parts.hostname or "", port)
    pinned_url, host_header, hostname = _pinned_url(url, target.address)
    session = _session()
    request = requests.Request(
        "POST",
        pinned_url,
        data=body,
        headers={**headers, "Host": host_header, "Accept-Encoding": "identity"},
    )
    prepared = session.prepare_request(request)
    prepared.server_hostname = hostname
    deadline = settings.WEBHOOK_RESPONSE_TIMEOUT
    response = session.send(
        prepared,
        stream=True,
        allow_redirects=False,
        timeout=(settings.WEBHOOK_CONNECT_TIMEOUT, deadline),
    )
    try:
        content, complete = _read_capped(response, started=started, deadline=deadline)
    except BaseException:
        response.close()
        raise
    if complete:
        response.raw.release_conn()
    else:
        response.close()
    status = response.status_code
    if is_success(status):
        outcome = AttemptOutcome.SUCCESS
    elif 400 <= status < 500:
        outcome = AttemptOutcome.HTTP_4XX
    elif 500 <= status < 600:
        outcome = AttemptOutcome.HTTP_5XX
    else:
        outcome = AttemptOutcome.HTTP_OTHER
    return TransportResult(
        outcome=outcome,
        duration_ms=int((time.monotonic() - started) * 1000),
        status=status,
        headers=dict(response.headers),
        body=content,
        error="" if outcome == AttemptOutcome.SUCCESS else f"HTTP {status}",
    )


def _read_capped(
    response: requests.Response, *, started: float, deadline: float
) -> tuple[bytes, bool]:
    """Read at most WEBHOOK_MAX_RESPONSE_BYTES before the deadline.

    Returns the bytes and whether the body was read to its end.
    """
    cap = settings.WEBHOOK_MAX_RESPONSE_BYTES
    chunks: list[bytes] = []
    size = 0
    for chunk in response.raw.stream(_READ_CHUNK, decode_content=False):
        if time.monotonic() - started > deadline:
            raise _DeadlineExceeded
        chunks.append(chunk)
        size += len(chunk)
        if size >= cap:
            return b"".join(chunks)[:cap], False
    return b"".join(chunks), True
