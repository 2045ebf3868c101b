"""Name resolution for outbound deliveries: the system resolver or chosen servers.

`WEBHOOK_DNS_SERVERS` empty: `socket.getaddrinfo` (the hosts file, then the
system's DNS). Set: A and AAAA queries to those servers only (dnspython), without
the hosts file or search domains, so the operator decides which resolver
deliveries trust.
"""

import ipaddress
import socket

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
from django.conf import settings

# Default port of a server given without one.
DNS_PORT = 53


def lookup(name: str, port: int) -> list[tuple[int, str]]:
    """Every (address family, address) `name` resolves to; raise socket.gaierror."""
    servers = settings.WEBHOOK_DNS_SERVERS
    if not servers:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        return [(family, sockaddr[0]) for family, *_, sockaddr in infos]
    return _query(name, servers)


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


def _query(name: str, servers: list[str]) -> list[tuple[int, str]]:
    """A, then AAAA answers from `servers`; IPv4 first, as most receivers expect."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [parse_server(server) for server in servers]
    # Name resolution is part of connecting: it shares the connect timeout.
    resolver.lifetime = settings.WEBHOOK_CONNECT_TIMEOUT
    answers: list[tuple[int, str]] = []
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
