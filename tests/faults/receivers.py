"""Receivers of a fault run: each verifies signatures and counts what it accepted.

`steady` answers 200 at once; `slow` answers 200 after a delay (deliveries are in
flight when a worker is told to stop); `flaky` answers 200, 500, or hangs past the
sender's deadline and then drops the connection. A receiver counts a `webhook-id`
only when it answered 2xx, so a count above one is a duplicate delivery.

Events of a keyed stream carry their line (the `ordering_key`) and the line's
counter in their payload; a receiver also notes, in the order it answered them
2xx, the (line, counter) of those requests (invariants.order_violations).
"""

import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:
        pass  # Thousands of requests: the counters say what happened.

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if len(body) < length:
            # The sender went away mid-request (a killed worker): nothing to verify.
            self.server.receiver.dropped += 1
            self.close_connection = True
            return
        self.server.receiver.handle(self, body)

    def answer(self, status: int) -> None:
        payload = b"{}"
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, receiver: "FaultReceiver"):
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request, client_address) -> None:
        # A sender that gave up (deadline, killed worker) leaves a broken pipe.
        self.receiver.dropped += 1


class FaultReceiver:
    """A local receiver with a behaviour (`steady`, `slow`, `flaky`)."""

    def __init__(
        self,
        *,
        name: str,
        secret: str,
        behaviour: str = "steady",
        delay: float = 1.0,
        hang: float = 5.0,
        fail_ratio: float = 0.2,
        hang_ratio: float = 0.1,
        seed: int = 0,
    ):
        self.name = name
        self.behaviour = behaviour
        self.delay = delay
        self.hang = hang
        self.fail_ratio = fail_ratio
        self.hang_ratio = hang_ratio
        self.webhook = Webhook(secret)
        self.accepted: Counter[str] = Counter()
        # (line, counter) of keyed requests answered 2xx, in answering order.
        self.keyed: list[tuple[str, int]] = []
        self.answered: list[float] = []  # when each 2xx answer went (monotonic)
        self.requests = 0
        self.bad_signatures = 0
        self.dropped = 0
        self.in_flight = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), daemon=True
        )

    @property
    def url(self) -> str:
        """The receiver's URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{self.name}"

    def start(self) -> "FaultReceiver":
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def handle(self, request: _Handler, body: bytes) -> None:
        """Verify, act out the behaviour, count what was accepted."""
        headers = {key.lower(): value for key, value in request.headers.items()}
        try:
            self.webhook.verify(body, headers)
        except WebhookVerificationError:
            with self._lock:
                self.requests += 1
                self.bad_signatures += 1
            request.answer(400)
            return
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            roll = self._random.random()
        try:
            status = self._act(roll)
            if status is None:
                request.close_connection = True
                return
            if 200 <= status < 300:
                position = keyed_position(body)
                with self._lock:
                    # Noted before the answer leaves: the sender cannot move the
                    # line on before this request is on record.
                    self.accepted[headers["webhook-id"]] += 1
                    self.answered.append(time.monotonic())
                    if position is not None:
                        self.keyed.append(position)
            request.answer(status)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _act(self, roll: float) -> int | None:
        if self.behaviour == "slow":
            self._stopping.wait(self.delay)
            return 200
        if self.behaviour == "flaky":
            if roll < self.hang_ratio:
                # Past the sender's deadline, then no answer at all.
                self._stopping.wait(self.hang)
                return None
            if roll < self.hang_ratio + self.fail_ratio:
                return 500
        return 200

    def duplicates(self) -> int:
        """Accepted deliveries beyond the first per webhook-id."""
        with self._lock:
            return sum(count - 1 for count in self.accepted.values() if count > 1)

    def snapshot(self) -> Counter[str]:
        """A copy of the accepted counts."""
        with self._lock:
            return Counter(self.accepted)

    def keyed_snapshot(self) -> list[tuple[str, int]]:
        """A copy of the keyed requests answered 2xx, in answering order."""
        with self._lock:
            return list(self.keyed)


def keyed_position(body: bytes) -> tuple[str, int] | None:
    """The (line, counter) a keyed event's envelope carries; None when unkeyed."""
    data = json.loads(body).get("data") or {}
    line, counter = data.get("line"), data.get("counter")
    if line is None or counter is None:
        return None
    return str(line), int(counter)


def wait_idle(receivers: list[FaultReceiver], *, timeout: float) -> None:
    """Wait (bounded) until no receiver is in the middle of a request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(receiver.in_flight for receiver in receivers):
            return
        time.sleep(0.1)
