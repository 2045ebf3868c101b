"""Outbound HTTP: one POST to a checked address, returning a result, never raising.

No redirects, a connect timeout, a whole-response deadline and a capped body read.
The host name is resolved once and checked by the address policy; the connection
goes to that address (TLS still verifies the certificate for the name), so a DNS
answer that changes between the check and the connect cannot reach a blocked host.

urllib3 directly (the connection pools under `requests`): a delivery needs none
of requests' sessions, cookies, hooks or redirect handling, which cost about a
third of the CPU of a delivery. Kept-alive connections are pooled per process.
"""

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import certifi
from django.conf import settings
from urllib3 import BaseHTTPResponse, PoolManager, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
)

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


_local = threading.local()
_pools: PoolManager | None = None
_pools_lock = threading.Lock()


def _pool_manager() -> PoolManager:
    """The process's connection pools, one per (scheme, address, port, name).

    Shared by every thread (urllib3's pools are thread-safe), so an endpoint
    costs a few kept-alive connections per worker, not a few per thread.
    """
    global _pools
    with _pools_lock:
        if _pools is None:
            manager = PoolManager(
                num_pools=settings.WEBHOOK_HTTP_POOLS,
                maxsize=max(1, settings.WEBHOOK_ENDPOINT_MAX_IN_FLIGHT),
                block=False,
                retries=False,
            )
            manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
            _pools = manager
        return _pools


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
    except NewConnectionError as exc:  # refused, unreachable (not a timeout)
        return _connection_error(exc, elapsed_ms())
    except ConnectTimeoutError:
        return TransportResult(
            AttemptOutcome.TIMEOUT,
            elapsed_ms(),
            error=f"connect timeout after {settings.WEBHOOK_CONNECT_TIMEOUT:g} s",
        )
    except (TimeoutError, ReadTimeoutError, _DeadlineExceeded):
        return _timeout(elapsed_ms())
    except (HTTPError, OSError) as exc:
        if _deadline_fired():
            return _timeout(elapsed_ms())
        return _connection_error(exc, elapsed_ms())
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


def _connection_error(exc: BaseException, duration_ms: int) -> TransportResult:
    return TransportResult(
        AttemptOutcome.CONNECTION_ERROR,
        duration_ms,
        error=f"{type(exc).__name__}: {exc}"[:2000],
    )


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
    scheme = parts.scheme
    port = parts.port or (443 if scheme == "https" else 80)
    hostname = parts.hostname or ""
    target = resolve(hostname, port)
    pool_kwargs = {}
    if scheme == "https":
        # The connection goes to the checked address; TLS still verifies the
        # certificate for the name (and sends it as SNI).
        pool_kwargs = {
            "server_hostname": hostname,
            "assert_hostname": hostname,
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": settings.WEBHOOK_CA_BUNDLE or certifi.where(),
        }
    pool = _pool_manager().connection_from_host(
        target.address, port=port, scheme=scheme, pool_kwargs=pool_kwargs
    )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = settings.WEBHOOK_RESPONSE_TIMEOUT
    response = pool.urlopen(
        "POST",
        path,
        body=body,
        headers={
            **headers,
            "Host": parts.netloc.rpartition("@")[2],
            "Accept-Encoding": "identity",
        },
        redirect=False,
        retries=False,
        assert_same_host=False,
        preload_content=False,
        decode_content=False,
        timeout=Timeout(connect=settings.WEBHOOK_CONNECT_TIMEOUT, read=deadline),
    )
    try:
        content, complete = _read_capped(response, started=started, deadline=deadline)
    except BaseException:
        _discard(response)
        raise
    if complete:
        response.release_conn()
    else:
        _discard(response)  # a body left half-read: never reuse the connection
    status = response.status
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


def _discard(response: BaseHTTPResponse) -> None:
    response.close()
    response.release_conn()


def _read_capped(
    response: BaseHTTPResponse, *, started: float, deadline: float
) -> tuple[bytes, bool]:
    """Read at most WEBHOOK_MAX_RESPONSE_BYTES before the deadline.

    Returns the bytes and whether the body was read to its end.
    """
    cap = settings.WEBHOOK_MAX_RESPONSE_BYTES
    chunks: list[bytes] = []
    size = 0
    for chunk in response.stream(_READ_CHUNK, decode_content=False):
        if time.monotonic() - started > deadline:
            raise _DeadlineExceeded
        chunks.append(chunk)
        size += len(chunk)
        if size >= cap:
            return b"".join(chunks)[:cap], False
    return b"".join(chunks), True
