"""Outbound HTTP (deliveries.transport) against real local servers.

`WebhookReceiver` covers the ordinary answers; small raw servers in threads cover
what it cannot do: huge bodies, bodies and headers dripped byte by byte, and
counting TCP connections for keep-alive.
"""

import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deliveries import transport
from deliveries.models import AttemptOutcome
from deliveries.receiver import WebhookReceiver
from deliveries.transport import exchange

BODY = b'{"id":"evt_1","type":"t","data":{}}'
HEADERS = {"content-type": "application/json", "x-test": "transport"}


@pytest.fixture(autouse=True)
def _loopback_only(settings, _allow_loopback):
    """Open only 127.0.0.0/8, as the brief's delivery environment does."""
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]


class RawServer:
    """A threaded TCP server on 127.0.0.1 that counts accepted connections."""

    def __init__(self, handler: type[socketserver.BaseRequestHandler]):
        outer = self
        self.accepted = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                request = super().get_request()
                with outer._lock:
                    outer.accepted += 1
                return request

            def handle_error(self, request, client_address):
                pass  # the client hanging up mid-write is expected here

        self._server = Server(("127.0.0.1", 0), handler)
        self._server.raw = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def __enter__(self) -> "RawServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class SmallOkHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive: read the body, answer 200 with a small body."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        data = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class HugeBodyHandler(SmallOkHandler):
    """Answer 200 with a 1 MB body."""

    size = 1024 * 1024

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(self.size))
        self.end_headers()
        try:
            for _ in range(self.size // 65536):
                self.wfile.write(b"x" * 65536)
        except OSError:
            self.close_connection = True


class DripBodyHandler(SmallOkHandler):
    """Send the headers at once, then one body byte every 0.2 s for 5 s."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "25")
        self.end_headers()
        self.wfile.flush()
        drip(self, b"y" * 25)


class DripHeadersHandler(SmallOkHandler):
    """Send the status line and headers one byte every 0.1 s (about 4 s)."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        drip(self, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", interval=0.1)


def drip(
    handler: BaseHTTPRequestHandler, data: bytes, *, interval: float = 0.2
) -> None:
    """Write `data` a byte at a time, `interval` apart, until done or stopped."""
    handler.close_connection = True
    stopping = handler.server.raw.stopping
    for index in range(len(data)):
        if stopping.wait(interval):
            return
        try:
            handler.wfile.write(data[index : index + 1])
            handler.wfile.flush()
        except OSError:
            return


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_post_2xx_success_captures_status_headers_and_body(receiver):
    # when
    result = transport.post(url=receiver.url + "hook?x=1", body=BODY, headers=HEADERS)
    # then
    assert result.outcome == AttemptOutcome.SUCCESS
    assert result.succeeded
    assert result.status == 200
    assert result.error == ""
    assert result.body == b'{"ok": true, "status": 200}'
    assert result.headers["Content-Type"] == "application/json"
    assert result.headers["Server"].startswith("WebhookReceiver/")
    assert result.duration_ms >= 0
    [request] = receiver.received
    assert request.body == BODY
    assert request.path == "/hook?x=1"
    assert request.header("x-test") == "transport"
    assert request.header("content-type") == "application/json"


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (201, AttemptOutcome.SUCCESS),
        (204, AttemptOutcome.SUCCESS),
        (400, AttemptOutcome.HTTP_4XX),
        (410, AttemptOutcome.HTTP_4XX),
        (500, AttemptOutcome.HTTP_5XX),
        (503, AttemptOutcome.HTTP_5XX),
    ],
)
def test_post_status_maps_to_outcome(receiver, status, outcome):
    receiver.set_statuses([status])
    result = transport.post(url=receiver.url, body=BODY, headers=HEADERS)
    assert (result.outcome, result.status) == (outcome, status)
    assert (result.error == "") is (outcome == AttemptOutcome.SUCCESS)


def test_post_retry_after_header_is_captured():
    with WebhookReceiver(statuses=[429], retry_after=17) as receiver:
        result = transport.post(url=receiver.url, body=BODY, headers=HEADERS)
    assert result.outcome == AttemptOutcome.HTTP_4XX
    assert result.headers["Retry-After"] == "17"


def test_post_response_body_capped_at_default_limit(settings):
    assert exchange.RESPONSE_READ_MAX == 64 * 1024
    with RawServer(HugeBodyHandler) as server:
        result = transport.post(url=server.url, body=BODY, headers=HEADERS)
    assert result.outcome == AttemptOutcome.SUCCESS
    assert len(result.body) == 64 * 1024
    assert result.headers["Content-Length"] == str(1024 * 1024)


def test_post_response_body_capped_at_configured_limit(monkeypatch, settings):
    monkeypatch.setattr(
        exchange, "RESPONSE_READ_MAX", 10_000
    )  # not a multiple of the read chunk
    with RawServer(HugeBodyHandler) as server:
        result = transport.post(url=server.url, body=BODY, headers=HEADERS)
    assert result.outcome == AttemptOutcome.SUCCESS
    assert result.body == b"x" * 10_000


def test_post_redirect_not_followed(receiver):
    receiver.set_statuses([301])
    result = transport.post(url=receiver.url, body=BODY, headers=HEADERS)
    assert result.outcome == AttemptOutcome.HTTP_OTHER
    assert result.status == 301
    assert result.headers["Location"] == "http://127.0.0.1:1/"
    assert not result.succeeded
    assert len(receiver.received) == 1


def test_post_closed_port_is_connection_error():
    result = transport.post(
        url=f"http://127.0.0.1:{closed_port()}/", body=BODY, headers=HEADERS
    )
    assert result.outcome == AttemptOutcome.CONNECTION_ERROR
    assert result.status is None
    assert result.error


def test_post_blocked_destination_never_connects(settings, receiver):
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    result = transport.post(url=receiver.url, body=BODY, headers=HEADERS)
    assert result.outcome == AttemptOutcome.BLOCKED
    assert "loopback" in result.error
    assert receiver.received == []


def test_post_slow_response_times_out(settings):
    settings.WEBHOOK_RESPONSE_TIMEOUT = 0.5
    with WebhookReceiver(delay=5) as receiver:
        started = time.monotonic()
        result = transport.post(url=receiver.url, body=BODY, headers=HEADERS)
        elapsed = time.monotonic() - started
    assert result.outcome == AttemptOutcome.TIMEOUT
    assert result.status is None
    assert 0.4 <= elapsed < 2.0
    assert "0.5 s" in result.error


def test_post_dripping_body_hits_whole_response_deadline(settings):
    settings.WEBHOOK_RESPONSE_TIMEOUT = 1
    with RawServer(DripBodyHandler) as server:
        started = time.monotonic()
        result = transport.post(url=server.url, body=BODY, headers=HEADERS)
        elapsed = time.monotonic() - started
    assert result.outcome == AttemptOutcome.TIMEOUT, result
    assert elapsed < 2.5


def test_post_dripping_headers_hits_whole_response_deadline(settings):
    settings.WEBHOOK_RESPONSE_TIMEOUT = 1
    with RawServer(DripHeadersHandler) as server:
        started = time.monotonic()
        result = transport.post(url=server.url, body=BODY, headers=HEADERS)
        elapsed = time.monotonic() - started
    assert result.outcome == AttemptOutcome.TIMEOUT, result
    assert elapsed < 2.5


def test_post_keep_alive_reuses_one_connection():
    with RawServer(SmallOkHandler) as server:
        first = transport.post(url=server.url, body=BODY, headers=HEADERS)
        second = transport.post(url=server.url, body=BODY, headers=HEADERS)
        accepted = server.accepted
    assert first.outcome == second.outcome == AttemptOutcome.SUCCESS
    assert accepted == 1


def test_post_capped_response_connection_not_reused(monkeypatch, settings):
    # A body left half-read must not be reused: the next POST opens a new one.
    monkeypatch.setattr(exchange, "RESPONSE_READ_MAX", 1000)
    with RawServer(HugeBodyHandler) as server:
        first = transport.post(url=server.url, body=BODY, headers=HEADERS)
        second = transport.post(url=server.url, body=BODY, headers=HEADERS)
        accepted = server.accepted
    assert first.body == second.body == b"x" * 1000
    assert accepted == 2
