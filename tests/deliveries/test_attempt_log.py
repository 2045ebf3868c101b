"""Bounded attempt records: a receiver's headers and a tenant's own cannot grow them.

Stored response and request headers are capped in count and bytes (with a
`[truncated]` entry saying what was left out), as the response body is.
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deliveries.attempt_log import (
    MAX_STORED_HEADER_BYTES,
    MAX_STORED_HEADERS,
    TRUNCATED,
    stored_headers,
)
from deliveries.services.attempts import delivery_run
from subscriptions.models import Endpoint
from tests.factories import make_endpoint, make_event


class _ManyHeaders(BaseHTTPRequestHandler):
    """Answers 200 with 400 headers of about 120 bytes each (48 KB)."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        for number in range(400):
            self.send_header(f"X-Filler-{number}", "v" * 100)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def noisy_receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ManyHeaders)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _size(headers: dict[str, str]) -> int:
    return sum(len(name) + len(value) for name, value in headers.items())


def test_stored_response_headers_are_capped_and_marked(tenant, noisy_receiver):
    # given
    make_endpoint(tenant=tenant, url=noisy_receiver)
    _, [delivery] = make_event(tenant=tenant)
    # when
    delivery_run(delivery_id=delivery.pk)
    # then
    attempt = delivery.attempts.get()
    assert attempt.response_status == 200
    stored = attempt.response_headers
    assert TRUNCATED in stored
    assert "more headers" in stored[TRUNCATED]
    kept = {name: value for name, value in stored.items() if name != TRUNCATED}
    assert len(kept) <= MAX_STORED_HEADERS
    assert _size(kept) <= MAX_STORED_HEADER_BYTES
    assert "X-Filler-0" in kept  # in order: the first ones are kept


def test_stored_request_headers_are_capped(tenant, receiver):
    # given: an endpoint with 50 headers of 4 KiB (the most the API accepts)
    endpoint = make_endpoint(tenant=tenant, url=receiver.url)
    big = {f"X-Big-{number}": "h" * 4096 for number in range(50)}
    Endpoint.objects.filter(pk=endpoint.pk).update(headers=big)
    _, [delivery] = make_event(tenant=tenant)
    # when
    delivery_run(delivery_id=delivery.pk)
    # then: the receiver got them all, the record keeps at most 8 KiB of them
    [request] = receiver.received
    assert request.header("X-Big-49") == "h" * 4096
    stored = delivery.attempts.get().request_headers
    assert TRUNCATED in stored
    assert _size({k: v for k, v in stored.items() if k != TRUNCATED}) <= 8192


def test_stored_headers_small_sets_unchanged_but_redacted():
    headers = {"Content-Type": "application/json", "Set-Cookie": "s=1"}
    assert stored_headers(headers) == {
        "Content-Type": "application/json",
        "Set-Cookie": "[redacted]",
    }
