"""Name resolution for outbound deliveries: the system resolver or chosen servers.

`WEBHOOK_DNS_SERVERS` empty: `socket.getaddrinfo` (the hosts file, then the
system's DNS). Set: A and AAAA queries to those servers only (dnspython), without
the hosts file or search domains, so the operator decides which resolver
deliveries trust.

Either way each lookup runs on a thread of its own and is over by the connect
timeout at the latest (a `socket.gaierror` then, whatever the resolver is still
doing), and callers that want the same name at the same time share one lookup.
`lookup_later` lets the delivery engine wait without a thread: an endpoint whose
DNS hangs holds one lookup thread per name, not a worker thread per delivery for
as long as the system resolver's own timeouts (glibc's are 5 s a try, per server).
"""

import heapq
import ipaddress
import itertools
import os
import queue
import socket
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
from django.conf import settings

# Default port of a server given without one.
DNS_PORT = 53
# Distinct names being looked up at once in one process. Each holds a thread
# until its resolver answers or gives up; a worker's names in flight are bounded
# by the messages it holds, so this is a guard, not a limit anyone should meet.
MAX_LOOKUPS_IN_FLIGHT = 512
# Of those, the most one owner (a tenant) starts: a tenant whose names hang (a
# name server that never answers) holds at most this share, and the others'
# lookups go on.
MAX_LOOKUPS_PER_OWNER = MAX_LOOKUPS_IN_FLIGHT // 8
# How long an idle lookup thread waits for another lookup before it ends.
IDLE_SECONDS = 30.0

Answers = list[tuple[int, str]]
_Key = tuple[str, tuple[str, ...]]  # the name and the servers asked


class _Lookup:
    """One name being looked up; settled once: answered, failed or timed out."""

    __slots__ = ("deadline", "future", "key", "owner", "settled", "timeout")

    def __init__(self, key: _Key, timeout: float, owner: str) -> None:
        self.key = key
        self.owner = owner
        self.future: Future = Future()
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.settled = False


_lock = threading.Lock()
_deadline_passed = threading.Condition(_lock)
_in_flight: dict[_Key, _Lookup] = {}
_by_owner: dict[str, int] = {}  # lookups in flight that each owner started
_deadlines: list[tuple[float, int, _Lookup]] = []  # a heap, earliest first
_order = itertools.count()
_watcher: threading.Thread | None = None
# Lookup threads waiting for work, and the lookups handed to them.
_idle = 0
_jobs: queue.SimpleQueue = queue.SimpleQueue()


def lookup(name: str, port: int, *, owner: str = "") -> Answers:
    """Every (address family, address) `name` resolves to; raise socket.gaierror.

    Returns or raises by WEBHOOK_CONNECT_TIMEOUT: resolution is part of connecting.
    """
    timeout = settings.WEBHOOK_CONNECT_TIMEOUT
    try:
        # The watcher settles it by then; the margin only guards against a bug.
        return lookup_later(name, port, owner=owner).result(timeout + 1)
    except FutureTimeout:
        raise _no_answer(name, timeout) from None


def lookup_later(name: str, port: int, *, owner: str = "") -> Future:
    """A future of `lookup(name, port)`, done by the connect timeout at the latest.

    A lookup of the same name (and servers) already in flight is shared. A new
    one is refused past MAX_LOOKUPS_IN_FLIGHT, or past MAX_LOOKUPS_PER_OWNER
    started for `owner` (a tenant id; "" for callers without one). Its callbacks
    run on the lookup's thread or the timeout watcher's: keep them short.
    """
    key = (name, tuple(settings.WEBHOOK_DNS_SERVERS))
    global _watcher, _idle
    with _lock:
        pending = _in_flight.get(key)
        if pending is not None:
            return pending.future
        if len(_in_flight) >= MAX_LOOKUPS_IN_FLIGHT:
            return _refused(f"{name}: too many name lookups in flight")
        if _by_owner.get(owner, 0) >= MAX_LOOKUPS_PER_OWNER:
            return _refused(f"{name}: too many name lookups in flight for its tenant")
        _by_owner[owner] = _by_owner.get(owner, 0) + 1
        timeout = settings.WEBHOOK_CONNECT_TIMEOUT
        pending = _in_flight[key] = _Lookup(key, timeout, owner)
        heapq.heappush(_deadlines, (pending.deadline, next(_order), pending))
        if _watcher is None:
            _watcher = threading.Thread(
                target=_watch_deadlines, name="dns-deadlines", daemon=True
            )
            _watcher.start()
        elif _deadlines[0][2] is pending:
            _deadline_passed.notify()  # the earliest now: wake the watcher sooner
        if _idle:  # a thread waits for work: hand it this lookup
            _idle -= 1
            _jobs.put((pending, port))
            return pending.future
    threading.Thread(
        target=_lookup_thread,
        args=(pending, port),
        name="dns-lookup",
        daemon=True,  # a resolver that never answers must not hold exit
    ).start()
    return pending.future


def _refused(message: str) -> Future:
    refused: Future = Future()
    refused.set_exception(socket.gaierror(message))
    return refused


def _lookup_thread(pending: _Lookup, port: int) -> None:
    """Look names up until none came for IDLE_SECONDS (starting a thread costs
    far more than a lookup in the hosts file or a local cache)."""
    global _idle
    while True:
        _run(pending, port)
        with _lock:
            _idle += 1
        try:
            pending, port = _jobs.get(timeout=IDLE_SECONDS)
        except queue.Empty:
            with _lock:
                try:  # handed one just as the wait ended (counted for us)
                    pending, port = _jobs.get_nowait()
                except queue.Empty:
                    _idle -= 1
                    return


def _run(pending: _Lookup, port: int) -> None:
    name, servers = pending.key
    try:
        if servers:
            answers = _query(name, servers)
        else:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
            answers = [(family, sockaddr[0]) for family, *_, sockaddr in infos]
    except Exception as exc:  # noqa: BLE001 (handed to the callers)
        _settle(pending, error=exc)
    else:
        _settle(pending, answers=answers)


def _settle(pending: _Lookup, *, answers=None, error=None) -> None:
    """Answer a lookup's callers, unless it is settled already (first one wins)."""
    with _lock:
        if pending.settled:
            return
        pending.settled = True
        if _in_flight.get(pending.key) is pending:
            del _in_flight[pending.key]
        left = _by_owner.pop(pending.owner, 1) - 1
        if left:
            _by_owner[pending.owner] = left
    # Outside the lock: the future's callbacks run here and may look names up.
    if error is None:
        pending.future.set_result(answers)
    else:
        pending.future.set_exception(error)


def _watch_deadlines() -> None:
    """Fail the lookups still running at their deadline; the next caller starts anew."""
    while True:
        for pending in _wait_for_expired():
            _settle(pending, error=_no_answer(pending.key[0], pending.timeout))


def _wait_for_expired() -> list[_Lookup]:
    """Wait for the earliest deadline; the lookups unsettled when it passed."""
    with _lock:
        while True:
            now = time.monotonic()
            expired = []
            while _deadlines and (_deadlines[0][2].settled or _deadlines[0][0] <= now):
                pending = heapq.heappop(_deadlines)[2]
                if not pending.settled:
                    expired.append(pending)
            if expired:
                return expired
            _deadline_passed.wait(_deadlines[0][0] - now if _deadlines else None)


def _no_answer(name: str, timeout: float) -> socket.gaierror:
    return socket.gaierror(f"{name}: no answer within {timeout:g} s")


def _forget_lookups_in_child() -> None:
    """A forked child has none of its parent's threads: start from nothing."""
    global _lock, _deadline_passed, _watcher, _idle, _jobs
    _lock = threading.Lock()
    _deadline_passed = threading.Condition(_lock)
    _in_flight.clear()
    _by_owner.clear()
    _deadlines.clear()
    _watcher = None
    _idle = 0
    _jobs = queue.SimpleQueue()


os.register_at_fork(after_in_child=_forget_lookups_in_child)


def parse_server(server: str) -> dns.nameserver.Do53Nameserver:
    """A server written `IP`, `IP:PORT`, `[IPv6]` or `[IPv6]:PORT`."""
    host, port = server.strip(), DNS_PORT
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif host.count(":") == 1:
        host, _, port_text = host.partition(":")
        port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return dns.nameserver.Do53Nameserver(str(ipaddress.ip_address(host)), port)


def _query(name: str, servers: tuple[str, ...]) -> Answers:
    """A, then AAAA answers from `servers`; IPv4 first, as most receivers expect."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [parse_server(server) for server in servers]
    # The callers' deadline (the connect timeout) is the watcher's; this one,
    # a second later, only ends the lookup's thread.
    resolver.lifetime = settings.WEBHOOK_CONNECT_TIMEOUT + 1
    answers: Answers = []
    for rdtype, family in (
        (dns.rdatatype.A, socket.AF_INET),
        (dns.rdatatype.AAAA, socket.AF_INET6),
    ):
        try:
            answer = resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as exc:
            raise socket.gaierror(f"{name}: {exc}") from exc
        answers.extend((family, rdata.address) for rdata in answer)
    if not answers:
        raise socket.gaierror(f"{name} has no A or AAAA record")
    return answers
