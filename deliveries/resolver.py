"""Name resolution for outbound deliveries: the system resolver or chosen servers.

`WEBHOOK_DNS_SERVERS` empty: `socket.getaddrinfo` (the hosts file, then the
system's DNS). Set: A and AAAA queries to those servers only (dnspython), without
the hosts file or search domains, so the operator decides which resolver
deliveries trust.

Either way a caller waits at most the connect timeout, and callers that want
the same name at the same time share one lookup: an endpoint whose DNS is slow
holds one lookup thread, not one of the worker's threads per delivery for as
long as the system resolver's own timeouts (glibc's are 5 s a try, per server).
"""

import ipaddress
import os
import socket
import threading
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

Answers = list[tuple[int, str]]

_lock = threading.Lock()
_in_flight: dict[tuple[str, tuple[str, ...]], Future] = {}


def lookup(name: str, port: int) -> Answers:
    """Every (address family, address) `name` resolves to; raise socket.gaierror.

    Waits at most WEBHOOK_CONNECT_TIMEOUT: name resolution is part of connecting.
    A lookup that outlives its callers finishes on its own thread, and callers
    that come meanwhile wait for it rather than start another.
    """
    servers = tuple(settings.WEBHOOK_DNS_SERVERS)
    key = (name, servers)
    with _lock:
        future = _in_flight.get(key)
        if future is None:
            if len(_in_flight) >= MAX_LOOKUPS_IN_FLIGHT:
                raise socket.gaierror(f"{name}: too many name lookups in flight")
            future = _in_flight[key] = Future()
            threading.Thread(
                target=_resolve_into,
                args=(future, key, port),
                name="dns-lookup",
                daemon=True,  # a resolver that never answers must not hold exit
            ).start()
    timeout = settings.WEBHOOK_CONNECT_TIMEOUT
    try:
        return future.result(timeout)
    except FutureTimeout:
        raise socket.gaierror(f"{name}: no answer within {timeout:g} s") from None


def _resolve_into(future: Future, key: tuple[str, tuple[str, ...]], port: int):
    name, servers = key
    try:
        if servers:
            answers = _query(name, servers)
        else:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
            answers = [(family, sockaddr[0]) for family, *_, sockaddr in infos]
    except Exception as exc:  # noqa: BLE001 (handed to the callers)
        outcome = exc
    else:
        outcome = None
    with _lock:
        if _in_flight.get(key) is future:
            del _in_flight[key]
    if outcome is None:
        future.set_result(answers)
    else:
        future.set_exception(outcome)


def _forget_lookups_in_child() -> None:
    """A forked child has none of its parent's lookup threads: forget their futures."""
    global _lock
    _lock = threading.Lock()
    _in_flight.clear()


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
    # Name resolution is part of connecting: it shares the connect timeout.
    resolver.lifetime = settings.WEBHOOK_CONNECT_TIMEOUT
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
