"""Load generators: wrk for throughput, a paced Python client for latency runs.

wrk (C, epoll) drives the ingest measurements: a Python client would take most of
a core of the two it measures. The paced client sends far below its own limit.
"""

import http.client
import json
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path

from bench.harness import parallel


class HttpPacer:
    """POST events to the API at `rate`/s from a few keep-alive connections."""

    def __init__(
        self,
        *,
        url: str,
        key: str,
        event_types: list[str],
        rate: float,
        seconds: float,
        connections: int = 4,
    ):
        self.host, self.port = url.removeprefix("http://").split(":")
        self.key, self.event_types = key, event_types
        self.rate, self.seconds, self.connections = rate, seconds, connections
        self.statuses: dict[int, int] = {}
        self.lock = threading.Lock()
        self.elapsed = float("nan")

    def run(self) -> "HttpPacer":
        """Send for `seconds` (bounded to 3x that if the server lags).

        `elapsed` is how long sending took: longer than `seconds` when the
        server answered slower than the pace, so rates are counted over it.
        """
        started = time.monotonic()
        parallel(self._thread, list(range(self.connections)))
        self.elapsed = time.monotonic() - started
        return self

    def _thread(self, offset: int) -> None:
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=10)
        rate = self.rate / self.connections
        total = int(rate * self.seconds)
        start = time.monotonic() + offset / self.rate
        for index in range(total):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            number = index * self.connections + offset
            event_type = self.event_types[number % len(self.event_types)]
            body = json.dumps({"event_type": event_type, "payload": {"n": number}})
            try:
                conn.request(
                    "POST",
                    "/api/v1/events",
                    body,
                    {
                        "Authorization": f"Bearer {self.key}",
                        "Content-Type": "application/json",
                        "Idempotency-Key": uuid.uuid4().hex,
                    },
                )
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                status = 0
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
            if time.monotonic() - start > self.seconds * 3:
                break
        conn.close()


_WRK_SUMMARY = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk(
    *,
    url: str,
    path: str,
    key: str,
    event_type: str,
    seconds: float,
    threads: int = 2,
    connections: int = 32,
    script: str = "post.lua",
    script_args: tuple[str, ...] = (),
) -> dict:
    """Run wrk against `path`; requests, good (2xx) responses and their rate.

    `script` (in bench/wrk) builds the requests: single events by default, whose
    first one is checked here; another script's caller checks its own.
    """
    if script == "post.lua":
        _check_post(url=url, path=path, key=key, event_type=event_type)
    script_path = Path(__file__).parent / "wrk" / script
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script_path),
            url,
            "--",
            path,
            key,
            uuid.uuid4().hex[:10],
            event_type,
            *script_args,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    match = _WRK_SUMMARY.search(out)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests_, elapsed = int(match[1]), float(match[2]) * _UNITS[match[3]]
    bad = int(m[1]) if (m := _WRK_NON2XX.search(out)) else 0
    return {
        "requests": requests_,
        "good": requests_ - bad,
        "seconds": elapsed,
        "rate": (requests_ - bad) / elapsed,
        "output": out,
    }


def _check_post(*, url: str, path: str, key: str, event_type: str) -> None:
    """One request first: wrk counts a 3xx as a success, this does not."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = json.dumps({"event_type": event_type, "payload": {"check": True}})
    conn.request(
        "POST",
        path,
        body,
        {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )
    response = conn.getresponse()
    text = response.read()[:500]
    conn.close()
    if response.status not in (200, 202):
        raise RuntimeError(f"POST {path} answered {response.status}: {text!r}")
