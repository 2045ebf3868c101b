"""A development/test webhook receiver built on the standard library HTTP server.

`WebhookReceiver` verifies Standard Webhooks signatures, records every POST and
answers with a scripted sequence of statuses, optionally after a delay. Tests can
run it in-process in a background thread; `manage.py webhook_receiver` serves it.
"""

import base64
import binascii
import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from deliveries.signing import SECRET_PREFIX, verify

logger = logging.getLogger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
REDIRECT_LOCATION = "http://127.0.0.1:1/"
BODYLESS_STATUSES = frozenset({204, 304})


def parse_statuses(value: str | Iterable[int]) -> tuple[int, ...]:
    """Validate statuses given as `"500,500,200"` or integers; raise ValueError."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        statuses = tuple(int(str(item).strip()) for item in items)
    except ValueError:
        raise ValueError(f"statuses must be integers, got {value!r}") from None
    if not statuses or any(not 200 <= status <= 599 for status in statuses):
        raise ValueError(f"statuses must be between 200 and 599, got {value!r}")
    return statuses


@dataclass(frozen=True)
class ReceivedRequest:
    """One POST as received, with the verification result and the status answered."""

    headers: dict[str, str]
    body: bytes
    path: str
    verified: bool | None
    status: int
    received_at: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        """Return a header value, matching its name case-insensitively."""
        found = (v for k, v in self.headers.items() if k.lower() == name.lower())
        return next(found, None)

    @cached_property
    def event_type(self) -> str | None:
        """Return the `type` field of a JSON object body, or None."""
        try:
            payload = json.loads(self.body)
        except ValueError:
            return None
        event_type = payload.get("type") if isinstance(payload, dict) else None
        return event_type if isinstance(event_type, str) else None

    def summary(self) -> dict[str, object]:
        """Return the JSON-serialisable log record of this request."""
        when = datetime.fromtimestamp(self.received_at, UTC)
        return {
            "time": when.isoformat(timespec="milliseconds"),
            "path": self.path,
            "webhook_id": self.header("webhook-id"),
            "webhook_timestamp": self.header("webhook-timestamp"),
            "type": self.event_type,
            "verified": self.verified,
            "status": self.status,
        }

    def __str__(self) -> str:
        """Return the one-line, human-readable log entry of this request."""
        fields = {k: "-" if v is None else v for k, v in self.summary().items()}
        fields["verified"] = {True: "true", False: "false"}.get(self.verified, "skip")
        return (
            "{time} POST {path} id={webhook_id} ts={webhook_timestamp} type={type} "
            "verified={verified} status={status}".format(**fields)
        )


def _valid_secret(secret: str) -> bool:
    """Whether `secret` is `whsec_` followed by a non-empty, strict base64 key."""
    key = secret.removeprefix(SECRET_PREFIX)
    try:
        return key != secret and bool(base64.b64decode(key, validate=True))
    except binascii.Error:
        return False


def _cut(connection: socket.socket) -> None:
    """Shut a client connection down so its handler thread stops waiting on it."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Serve health checks on GET and scripted webhook answers on POST."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # Headers and body are separate small writes.
    server_version = "WebhookReceiver/1.0"
    server: "_Server"

    def setup(self) -> None:
        super().setup()
        self.server.receiver._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.receiver._track(self.connection, add=False)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] in {"/", "/health"}:
            received = len(self.server.receiver.received)
            self._send(200, {"ok": True, "received": received})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._send(411, {"error": "a valid Content-Length is required"})
            return
        record, delay = receiver._process(dict(self.headers.items()), body, self.path)
        if record.verified is False:
            self._send(401, {"error": "invalid signature"})
            return
        try:
            if delay > 0:
                receiver._stopping.wait(delay)
            ok = 200 <= record.status < 300
            self._send(record.status, {"ok": ok, "status": record.status})
        finally:
            receiver._answered()

    def _read_body(self) -> bytes | None:
        """Read the body by Content-Length; None if it is malformed or chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return None
        length = self.headers.get("Content-Length", "0").strip()
        return self.rfile.read(int(length)) if length.isdigit() else None

    def _send(self, status: int, payload: dict[str, object]) -> None:
        """Send a JSON response with an exact Content-Length (keep-alive safe)."""
        retry_after = self.server.receiver.retry_after
        try:
            self.send_response(status)
            if status in REDIRECT_STATUSES:
                self.send_header("Location", REDIRECT_LOCATION)
            if retry_after is not None and not 200 <= status < 300:
                self.send_header("Retry-After", str(retry_after))
            data = b"" if status in BODYLESS_STATUSES else json.dumps(payload).encode()
            if data:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # The client went away (e.g. it timed out).


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that knows its `WebhookReceiver`."""

    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a burst of new
    # connections (the client retries a second later): senders open dozens.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], receiver: "WebhookReceiver"):
        self.receiver = receiver
        super().__init__(address, _Handler)


class WebhookReceiver:
    """Receive webhooks on a local port, verifying and recording each of them."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        secrets: Iterable[str] = (),
        delay: float = 0.0,
        statuses: Iterable[int] = (200,),
        retry_after: int | None = None,
        on_request: Callable[[ReceivedRequest], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.host, self.port, self.secrets = host, port, tuple(secrets)
        for secret in self.secrets:
            if not _valid_secret(secret):
                raise ValueError("secrets must look like whsec_<base64 key>")
        self.retry_after = retry_after
        self.on_request = on_request
        self.ssl_context = ssl_context  # serve HTTPS with this server context
        self.received: list[ReceivedRequest] = []  # Appended under `_cond` only.
        # POSTs received and not answered yet, and the most there ever were.
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections_opened = 0  # TCP connections accepted (keep-alive shows)
        self._cond = threading.Condition()
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.set_statuses(statuses)
        self.set_delay(delay)

    @property
    def url(self) -> str:
        """Return the base URL, e.g. `http://127.0.0.1:PORT/` (once started)."""
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        host, port = self._server.server_address[:2]
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://{host}:{port}/"

    def set_statuses(self, seq: Iterable[int]) -> None:
        """Answer with these statuses in order, one per request; the last repeats."""
        statuses = list(parse_statuses(seq))
        with self._cond:
            self._statuses = statuses

    def set_delay(self, seconds: float) -> None:
        """Wait this many seconds before answering each (validly signed) request."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        with self._cond:
            self._delay = float(seconds)

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least `count` requests were received; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.received) >= count, timeout)

    def start(self) -> Self:
        """Bind the port and serve in a daemon thread; return self."""
        if self._server is not None:
            raise RuntimeError("the receiver is already started")
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        if self.ssl_context is not None:
            self._server.socket = self.ssl_context.wrap_socket(
                self._server.socket, server_side=True
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), daemon=True
        )
        self._thread.start()
        logger.info("Webhook receiver listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, cut open keep-alive connections and free the port."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()  # Also cuts short any delay in progress.
        server.shutdown()
        with self._cond:
            connections = list(self._connections)
        for connection in connections:
            _cut(connection)
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        """Remember (or forget) an open client connection, to cut it on stop."""
        with self._cond:
            if not add:
                self._connections.discard(connection)
            elif self._stopping.is_set():
                _cut(connection)
            else:
                self._connections.add(connection)
                self.connections_opened += 1

    def _answered(self) -> None:
        with self._cond:
            self.in_flight -= 1

    def _process(
        self, headers: dict[str, str], body: bytes, path: str
    ) -> tuple[ReceivedRequest, float]:
        """Verify and record one POST; return its record and the delay to apply."""
        verified = None
        if self.secrets:
            verified = any(
                verify(secret=secret, headers=headers, body=body)
                for secret in self.secrets
            )
        with self._cond:
            status, delay = 401, 0.0
            if verified is not False:
                statuses = self._statuses
                status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
                delay = self._delay
            record = ReceivedRequest(headers, body, path, verified, status)
            self.received.append(record)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._cond.notify_all()
        logger.info("Received %s", record)
        if self.on_request is not None:
            try:
                self.on_request(record)
            except Exception:
                logger.exception("on_request callback failed for %s", path)
        return record, delay
