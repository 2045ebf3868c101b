"""Every request in flight of a worker process, on one event loop thread.

libcurl's multi interface over an epoll selector: the sockets libcurl asks to
watch, its timer, and a pipe that wakes the loop when a request is submitted.
Requests wait on their sockets, not in threads: a process holds as many in flight
as it has messages in hand, slow and hanging receivers included, and sending one
costs tens of microseconds of CPU instead of a thread switch per request and the
GIL hand-offs between dozens of threads.
"""

import contextlib
import logging
import os
import queue
import selectors
import threading
import time
from collections.abc import Callable

import pycurl

from deliveries.models import AttemptOutcome
from deliveries.transport.exchange import Exchange, new_handle
from deliveries.transport.request import Request
from deliveries.transport.result import TransportResult, elapsed_ms

logger = logging.getLogger(__name__)

Done = Callable[[TransportResult], object]
# Receiver connections libcurl keeps alive between deliveries (its connection
# cache, shared by every request of the process).
KEPT_ALIVE_CONNECTIONS = 1000


class Sender:
    """Sends requests submitted from any thread; calls `done` on the loop thread."""

    def __init__(self) -> None:
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        # Kept-alive receiver connections, shared by all the handles.
        self._multi.setopt(pycurl.M_MAXCONNECTS, KEPT_ALIVE_CONNECTIONS)
        self._selector = selectors.DefaultSelector()
        self._watched: dict[int, int] = {}  # fd -> selector events
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._timer_at: float | None = None
        self._free: list[pycurl.Curl] = []
        # id(handle) -> its exchange and callback
        self._flying: dict[int, tuple[Exchange, Done]] = {}
        self._thread = threading.Thread(
            target=self._run, name="delivery-sender", daemon=True
        )
        self._thread.start()

    def submit(self, request: Request, done: Done) -> None:
        """Send `request`; `done(result)` runs on the loop thread when it ended."""
        self._inbox.put((request, done))
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes it anyway
            os.write(self._wake_w, b"\0")

    @property
    def in_flight(self) -> int:
        """Requests started and not finished."""
        return len(self._flying)

    # --- the loop ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                self._turn()
            except Exception:  # a bug: log it, keep the loop (and its requests)
                logger.exception("delivery sender loop")
                time.sleep(0.01)

    def _turn(self) -> None:
        timeout = None
        if self._timer_at is not None:
            timeout = max(0.0, self._timer_at - time.monotonic())
        for key, mask in self._selector.select(timeout):
            if key.fd == self._wake_r:
                self._start_submitted()
                continue
            action = 0
            if mask & selectors.EVENT_READ:
                action |= pycurl.CSELECT_IN
            if mask & selectors.EVENT_WRITE:
                action |= pycurl.CSELECT_OUT
            self._multi.socket_action(key.fd, action)
        if self._timer_at is not None and time.monotonic() >= self._timer_at:
            self._timer_at = None
            self._multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
        self._collect()

    def _start_submitted(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        while True:
            try:
                request, done = self._inbox.get_nowait()
            except queue.Empty:
                return
            curl = self._free.pop() if self._free else new_handle()
            try:
                exchange = Exchange(curl, request)
                self._multi.add_handle(curl)
            except Exception:
                logger.exception("delivery sender: starting a request")
                self._free.append(new_handle())  # this one may be half set up
                _call(done, exchange_failed(request))
                continue
            self._flying[id(curl)] = (exchange, done)

    def _collect(self) -> None:
        while True:
            waiting, succeeded, failed = self._multi.info_read()
            for curl in succeeded:
                self._finish(curl, 0, "")
            for curl, code, message in failed:
                self._finish(curl, code, message)
            if not waiting:
                return

    def _finish(self, curl: pycurl.Curl, code: int, message: str) -> None:
        self._multi.remove_handle(curl)
        exchange, done = self._flying.pop(id(curl))
        result = exchange.finish(code, message)
        self._free.append(curl)
        _call(done, result)

    # --- libcurl's callbacks (on the loop thread, inside socket_action) ----

    def _on_socket(self, what: int, fd: int, multi, data) -> None:
        if what == pycurl.POLL_REMOVE:
            if self._watched.pop(fd, None) is not None:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(fd)
            return
        events = 0
        if what in (pycurl.POLL_IN, pycurl.POLL_INOUT):
            events |= selectors.EVENT_READ
        if what in (pycurl.POLL_OUT, pycurl.POLL_INOUT):
            events |= selectors.EVENT_WRITE
        if self._watched.get(fd) == events:
            return
        if fd in self._watched:
            try:
                self._selector.modify(fd, events)
            except (KeyError, OSError):
                # The fd number was closed and reused without a POLL_REMOVE.
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(fd)
                self._selector.register(fd, events)
        else:
            self._selector.register(fd, events)
        self._watched[fd] = events

    def _on_timer(self, timeout_ms: int) -> None:
        # Never call back into libcurl from here: the loop acts on it next turn.
        if timeout_ms < 0:
            self._timer_at = None
        else:
            self._timer_at = time.monotonic() + timeout_ms / 1000


def exchange_failed(request: Request) -> TransportResult:
    """The result of a request that could not be started (a bug, logged)."""
    return TransportResult(
        AttemptOutcome.CONNECTION_ERROR,
        elapsed_ms(request.started),
        error="the request could not be started",
    )


def _call(done: Done, result: TransportResult) -> None:
    try:
        done(result)
    except Exception:
        logger.exception("delivery sender: completion callback")
