"""A per-process watchdog that cuts sockets whose whole-response deadline passed.

Socket timeouts bound each `recv()`, not the response: a receiver that drips its
status line, headers or body a byte at a time would hold a worker far past the
deadline. The watchdog shuts such a socket down, which ends the blocked read at
once. One thread serves every request of the process, so arming costs a heap
push, not a thread.
"""

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass(order=True)
class Alarm:
    """One armed deadline; `fired` tells whether it cut the socket."""

    at: float
    seq: int
    sock: socket.socket | None = field(compare=False, default=None)
    fired: bool = field(compare=False, default=False)
    cancelled: bool = field(compare=False, default=False)


class Watchdog:
    """Cut armed sockets when their deadline passes, unless disarmed first."""

    def __init__(self) -> None:
        self._heap: list[Alarm] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, sock: socket.socket, seconds: float) -> Alarm:
        """Cut `sock` in `seconds` unless the alarm is disarmed before."""
        alarm = Alarm(at=time.monotonic() + seconds, seq=next(self._seq), sock=sock)
        with self._cond:
            self._ensure_thread()
            heapq.heappush(self._heap, alarm)
            # The thread sleeps until the earliest alarm: wake it only when this
            # one is earlier (a wake-up per request costs a thread switch).
            if self._heap[0] is alarm:
                self._cond.notify()
        return alarm

    def disarm(self, alarm: Alarm) -> None:
        """Cancel an alarm (a no-op once it fired)."""
        with self._cond:
            alarm.cancelled = True
            alarm.sock = None

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="delivery-deadline-watchdog", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                alarm = self._heap[0]
                wait = alarm.at - time.monotonic()
                if alarm.cancelled:
                    heapq.heappop(self._heap)
                    continue
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                sock, alarm.sock = alarm.sock, None
                alarm.fired = True
            _cut(sock)


def _cut(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


_watchdog = Watchdog()
_lock = threading.Lock()
_pid: int | None = None


def watchdog() -> Watchdog:
    """This process's watchdog (a new one after a fork)."""
    global _watchdog, _pid
    with _lock:
        if _pid != os.getpid():
            _watchdog = Watchdog()
            _pid = os.getpid()
        return _watchdog
