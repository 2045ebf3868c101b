"""Several "hosts" on 127.0.0.1: named workers, a Redis that never answers, and a
receiver that tells which worker process each request came from.

- `HostWorker`: a Celery worker with its own node name (`worker1@hostA`), started
  like tests/faults/stack.py's workers (by pid, in a session of its own).
- `RedisPartition`: a TCP port that accepts connections, reads what it is sent
  and never answers (a Redis behind a network partition, as a client sees it),
  until it is healed: then it forwards to the real Redis.
- `HostReceiver`: the project's WebhookReceiver, also counting the requests in
  flight per sending host. The host of a connection is found from its client
  port: the socket's inode in /proc/net/tcp, then the worker process holding it
  in /proc/<pid>/fd.
"""

import contextlib
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from http.server import ThreadingHTTPServer
from pathlib import Path

import requests
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from deliveries.receiver import WebhookReceiver, _Handler, _Server
from tests.faults.stack import Process, Worker


class HostWorker(Worker):
    """A Celery worker (threads pool) named `<name>@<host>`."""

    def __init__(
        self,
        *,
        node: str,
        env: dict,
        log_dir: Path,
        concurrency: int = 8,
        queues: Iterable[str] = (),
    ):
        self.host = node.split("@", 1)[1]
        log_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            name=node.replace("@", "-"),
            pool="threads",
            concurrency=concurrency,
            env=env,
            log_dir=log_dir,
            node=node,
            queues=queues,
        )


def start_together(processes: list[Process], *, timeout: float = 90.0) -> None:
    """Start every process at once, then wait until each is ready.

    Faster than one after the other on a small machine (each imports Django).
    Raises if one exits or is not ready in time; the caller stops them all.
    """
    marks = [process.launch() for process in processes]
    waiting = dict(enumerate(marks))
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for index, mark in list(waiting.items()):
            process = processes[index]
            if process.proc.poll() is not None:
                raise RuntimeError(f"{process.name} exited at start:\n{process.tail()}")
            if process.ready(mark):
                del waiting[index]
        time.sleep(0.2)
    if waiting:
        late = ", ".join(processes[index].name for index in waiting)
        raise RuntimeError(f"not ready in {timeout:.0f} s: {late}")


def stop_all(processes: list[Process], *, timeout: float = 20.0) -> dict[str, float]:
    """SIGTERM every running process, then SIGKILL (its group) what is left.

    Returns how long each took to exit after its SIGTERM (seconds; the timeout
    for those killed).
    """
    took = {}
    started = time.monotonic()
    running = [process for process in processes if process.running]
    for process in running:
        process.signal(signal.SIGTERM)
    deadline = started + timeout
    for process in running:
        if process.wait(max(0.0, deadline - time.monotonic())):
            took[process.name] = round(time.monotonic() - started, 1)
        else:
            process.kill()
            took[process.name] = timeout
    return took


class RedisPartition:
    """A TCP port on 127.0.0.1 standing for Redis behind a network partition.

    While cut, it accepts connections, reads what it is sent and never answers
    (what a client sees of a partition: no refusal, no reset, only silence).
    Once healed, it drops the silent connections and forwards new ones to the
    real Redis at `upstream`, byte for byte.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.accepted_while_cut = 0
        self.forwarded = 0
        self._cut = True
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._silent: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> "RedisPartition":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        self._thread.join(5)
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)
        self._listener.close()

    def heal(self) -> None:
        """End the partition: silent connections are dropped, new ones forwarded."""
        with self._lock:
            self._cut = False
            silent, self._silent = list(self._silent), set()
        for sock in silent:
            _shut(sock)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                cut = self._cut
                self._sockets.add(conn)
                if cut:
                    self._silent.add(conn)
                    self.accepted_while_cut += 1
            if cut:
                threading.Thread(target=_drain, args=(conn,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                _shut(conn)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.add(upstream)
                self.forwarded += 1
            for source, target in ((conn, upstream), (upstream, conn)):
                threading.Thread(
                    target=_pump, args=(source, target), daemon=True
                ).start()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _drain(conn: socket.socket) -> None:
    """Read and drop what a client sends, never answering, until it goes."""
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass
    _shut(conn)


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy one direction of a forwarded connection until either side ends."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    _shut(source)
    _shut(target)


def socket_owner(
    client_port: int, server_port: int, pids: dict[str, int]
) -> str | None:
    """Which of `pids` (by name) holds the client end of a connection to us."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if (
                    int(local.rsplit(":", 1)[1], 16) == client_port
                    and int(remote.rsplit(":", 1)[1], 16) == server_port
                ):
                    inode = fields[9]
                    break
        if inode is not None:
            break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for name, pid in pids.items():
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"{fd_dir}/{fd}") == target:
                    return name
    return None


class _HostHandler(_Handler):
    def setup(self) -> None:
        super().setup()
        self.server.receiver._connection_from(self.client_address[1])


class _HostServer(_Server):
    def __init__(self, address: tuple[str, int], receiver: "HostReceiver"):
        self.receiver = receiver
        ThreadingHTTPServer.__init__(self, address, _HostHandler)


class HostReceiver(WebhookReceiver):
    """A WebhookReceiver that also counts requests in flight per sending host.

    `pids()`: the worker processes by host name. `groups`: sets of hosts whose
    requests in flight are also counted together (e.g. those sharing Redis).
    Each request is counted inside the receiver's own in-flight interval.
    """

    def __init__(
        self,
        *,
        pids: Callable[[], dict[str, int]],
        groups: dict[str, set[str]],
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._pids = pids
        self._groups = groups
        self._where = threading.local()
        self.requests_by_host: Counter = Counter()
        self.in_flight_by_host: Counter = Counter()
        self.max_in_flight_by_host: Counter = Counter()
        self.in_flight_by_group: Counter = Counter()
        self.max_in_flight_by_group: Counter = Counter()
        self.arrivals: list[tuple[float, str]] = []  # (epoch seconds, host)

    def start(self) -> "HostReceiver":
        if self._server is not None:
            raise RuntimeError("the receiver is already started")
        self._stopping.clear()
        self._server = _HostServer((self.host, self.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), daemon=True
        )
        self._thread.start()
        return self

    def maxima(self, *, reset: bool = False) -> dict:
        """The most requests ever in flight: in all, per host, per group.

        `reset`: start over from what is in flight now (a new phase).
        """
        with self._cond:
            found = {
                "all": self.max_in_flight,
                "by_host": dict(self.max_in_flight_by_host),
                "by_group": dict(self.max_in_flight_by_group),
            }
            if reset:
                self.max_in_flight = self.in_flight
                self.max_in_flight_by_host = Counter(self.in_flight_by_host)
                self.max_in_flight_by_group = Counter(self.in_flight_by_group)
        return found

    def _connection_from(self, client_port: int) -> None:
        """Find, once per connection, which host opened it (this thread's)."""
        server_port = self._server.server_address[1]
        owner = socket_owner(client_port, server_port, self._pids())
        self._where.host = owner or "unknown"

    def _process(self, headers, body, path):
        record, delay = super()._process(headers, body, path)
        host = getattr(self._where, "host", "unknown")
        with self._cond:
            self.requests_by_host[host] += 1
            self.arrivals.append((record.received_at, host))
            self.in_flight_by_host[host] += 1
            self.max_in_flight_by_host[host] = max(
                self.max_in_flight_by_host[host], self.in_flight_by_host[host]
            )
            for group, hosts in self._groups.items():
                if host in hosts:
                    self.in_flight_by_group[group] += 1
                    self.max_in_flight_by_group[group] = max(
                        self.max_in_flight_by_group[group],
                        self.in_flight_by_group[group],
                    )
        return record, delay

    def _answered(self) -> None:
        host = getattr(self._where, "host", "unknown")
        with self._cond:
            self.in_flight_by_host[host] -= 1
            for group, hosts in self._groups.items():
                if host in hosts:
                    self.in_flight_by_group[group] -= 1
        super()._answered()


def _samples(families) -> dict[tuple, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def host_samples(path: Path) -> dict[tuple, float]:
    """The metrics of one host, read from its PROMETHEUS_MULTIPROC_DIR."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))
    return _samples(registry.collect())


def scraped_samples(port: int) -> dict[tuple, float]:
    """The metrics a worker serves on its WEBHOOK_WORKER_METRICS_PORT."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return _samples(text_string_to_metric_families(text))


def value(samples: dict[tuple, float], name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    return sum(
        found
        for (sample, sample_labels), found in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )
