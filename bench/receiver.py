"""Receivers for the benchmarks: asyncio, one event loop thread for all of them.

The benchmarks measure the platform, so their receivers must cost it as little of
the two shared cores as they can: a bare HTTP/1.1 keep-alive server that notes
when each request arrived and its `webhook-id`, then answers 200 at once, after a
delay (the slow receivers), or never (the dead one). About a tenth of the CPU per
request of the standard-library receiver the tests use (which also verifies
signatures, deliberately).
"""

import asyncio
import threading
import time
from dataclasses import dataclass

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
HANG = None  # delay of a receiver that never answers


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request as it arrived."""

    received_at: float
    webhook_id: str | None

    def header(self, name: str) -> str | None:
        """The `webhook-id` header (the only one kept)."""
        return self.webhook_id if name.lower() == "webhook-id" else None


class _Loop:
    """The event loop all bench receivers share, in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self.loop.run_forever, name="bench-receivers", daemon=True
        )
        thread.start()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)


_shared: _Loop | None = None
_lock = threading.Lock()


def _loop() -> _Loop:
    global _shared
    with _lock:
        if _shared is None:
            _shared = _Loop()
        return _shared


class BenchReceiver:
    """A receiver on 127.0.0.1: answers after `delay` s (HANG: never)."""

    def __init__(self, *, delay: float | None = 0.0, keep: bool = True) -> None:
        self.delay = delay
        self.keep = keep  # keep each Arrival (False: count only)
        self.received: list[Arrival] = []
        self.count = 0
        self._transports: set[asyncio.Transport] = set()
        self._server = None

    @property
    def url(self) -> str:
        """Base URL."""
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/"

    def start(self) -> "BenchReceiver":
        """Listen on a free port."""
        shared = _loop()

        async def serve():
            return await shared.loop.create_server(
                lambda: _Protocol(self), "127.0.0.1", 0, backlog=1024
            )

        self._server = shared.run(serve())
        return self

    def take_count(self) -> int:
        """Requests counted since the last call (records are not kept)."""
        count, self.count = self.count, 0
        return count

    def stop(self) -> None:
        """Close the listener and every connection (cuts hanging requests)."""
        if self._server is None:
            return
        server, self._server = self._server, None

        async def close():
            server.close()
            for transport in list(self._transports):
                transport.abort()
            await server.wait_closed()

        _loop().run(close())

    def _arrived(self, webhook_id: str | None) -> None:
        self.count += 1
        if self.keep:
            self.received.append(Arrival(time.time(), webhook_id))


class _Protocol(asyncio.Protocol):
    """HTTP/1.1 requests with a Content-Length body, one after another."""

    def __init__(self, receiver: BenchReceiver) -> None:
        self.receiver = receiver
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.receiver._transports.add(transport)

    def connection_lost(self, exc) -> None:
        self.receiver._transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = int(_header(head, b"content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            webhook_id = _header(head, b"webhook-id")
            self.receiver._arrived(webhook_id.decode() if webhook_id else None)
            delay = self.receiver.delay
            if delay is HANG:
                continue
            if delay:
                asyncio.get_running_loop().call_later(delay, self._answer)
            else:
                self._answer()

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(RESPONSE)


def _header(head: bytes, name: bytes) -> bytes | None:
    start = head.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()
