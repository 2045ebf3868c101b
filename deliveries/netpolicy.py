"""The outbound address policy: which addresses deliveries may connect to."""

import ipaddress
import re
import socket
from concurrent.futures import Future
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

from deliveries.resolver import lookup

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names that reach cloud metadata services without a blocked-looking address.
METADATA_HOSTNAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)

# A DNS name as deliveries accept it: labels of 1-63 ASCII letters, digits, "-"
# and "_" (internationalised names in their xn-- form). Nothing that libcurl would
# read differently from Python's URL parsing (percent-escapes, backslashes,
# other characters) gets past it.
_DNS_NAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*", re.ASCII)
MAX_NAME_LENGTH = 253
# A last label that URL parsers (WHATWG's, libcurl's, inet_aton) read as a number
# makes the host an IPv4 address in another spelling: 127.1, 0x7f000001, 2130706433.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+", re.ASCII)
# RFC 6761: localhost names are the loopback addresses, whatever DNS would say.
LOCALHOST_ANSWERS = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))

# Ranges that `is_global` does not catch, or that deserve naming anyway.
_EXTRA_BLOCKED = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",  # "this network"
        "100.64.0.0/10",  # CGNAT (also Alibaba's metadata 100.100.100.200)
        "169.254.0.0/16",  # link-local, AWS/GCP/Azure metadata
        "168.63.129.16/32",  # Azure's WireServer (a public address on every VM)
        "192.0.0.0/24",  # IETF protocol assignments (Oracle metadata 192.0.0.192)
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved
        "255.255.255.255/32",
        "64:ff9b::/96",  # NAT64: checked through the embedded IPv4 below
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
        "fd00:ec2::254/128",  # AWS metadata over IPv6
    )
)


class BlockedAddress(Exception):
    """The destination is not allowed by the outbound address policy."""


@dataclass(frozen=True)
class ResolvedTarget:
    """A host name and the checked address the connection must use."""

    host: str
    address: str
    family: int


def _allowed_networks() -> tuple:
    return _parse_networks(tuple(settings.WEBHOOK_ALLOWED_NETWORKS))


@lru_cache(maxsize=8)
def _parse_networks(cidrs: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, 6to4, Teredo or NAT64 address."""
    if address.version != 6:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_block_reason(address: IPAddress) -> str | None:
    """Why `address` is blocked, or None when deliveries may reach it."""
    if any(address in network for network in _allowed_networks()):
        return None
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        reason = address_block_reason(embedded)
        return f"{reason} (embedded in {address})" if reason else None
    if address.is_loopback:
        return f"{address} is a loopback address"
    if address.is_unspecified:
        return f"{address} is an unspecified address"
    if address.is_link_local:
        return f"{address} is a link-local address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if address.is_private or any(address in net for net in _EXTRA_BLOCKED):
        return f"{address} is a private or reserved address"
    if address.is_reserved or not address.is_global:
        return f"{address} is a reserved address"
    return None


@lru_cache(maxsize=4096)
def parse_ip_literal(host: str) -> IPAddress | None:
    """Parse `host` as an IP address literal, including brackets, or None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@lru_cache(maxsize=1024)
def _checked_literal(
    host: str, literal: IPAddress, allowed: tuple[str, ...]
) -> ResolvedTarget | str:
    """An address literal's target, or why it is blocked (per allowed networks)."""
    del allowed  # part of the key: the answer depends on it
    reason = address_block_reason(literal)
    if reason:
        return reason
    family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
    return ResolvedTarget(host=host, address=str(literal), family=family)


@lru_cache(maxsize=4096)
def host_error(host: str) -> str | None:
    """Why `host` is neither an IP literal nor a plain DNS name; None when it is one.

    `host` is a URL's host as Python's `urlsplit` reads it. Only text that libcurl
    reads the same way passes, so both agree on where a delivery goes.
    """
    name = _normalized(host)
    if "%" not in name and parse_ip_literal(name) is not None:
        return None
    if not name.isascii():
        return (
            f"{host!r} is not an ASCII host name: write internationalised names "
            "in their xn-- form"
        )
    if len(name) > MAX_NAME_LENGTH or not _DNS_NAME.fullmatch(name):
        return (
            f"{host!r} is not a valid host name: an IP address, or labels of "
            "ASCII letters, digits, '-' and '_' separated by '.'"
        )
    if _NUMERIC_LABEL.fullmatch(name.rpartition(".")[2]):
        return (
            f"{host!r} is not a valid IP address: write IPv4 addresses as four "
            "decimal numbers (a.b.c.d)"
        )
    return None


def is_localhost(name: str) -> bool:
    """A name of RFC 6761's `localhost.` domain (normalised)."""
    return name == "localhost" or name.endswith(".localhost")


def lookup_name(host: str) -> str | None:
    """The name `resolve(host)` looks up; None when it needs no lookup.

    An invalid host, an address literal, a localhost name, or a metadata host
    name refused as such, is decided without DNS.
    """
    name = _normalized(host)
    if (
        host_error(host) is not None
        or name in METADATA_HOSTNAMES
        or parse_ip_literal(name) is not None
        or is_localhost(name)
    ):
        return None
    return name


def _normalized(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def resolve(
    host: str, port: int, *, looked_up: Future | None = None, owner: str = ""
) -> ResolvedTarget:
    """Resolve `host` once and return the address to connect to, or raise.

    Every address the name resolves to must pass: a name that mixes a public and a
    private answer is blocked, so which one the connection would use never matters.
    The caller connects to the returned address, closing the DNS-rebinding gap.
    Names go to the system resolver, or to `WEBHOOK_DNS_SERVERS` when that is set
    (deliveries.resolver); localhost names are the loopback addresses. A host
    that is no IP literal nor plain DNS name (`host_error`) is refused.
    `looked_up`: the done `lookup_later` of `lookup_name(host)`, when the caller
    waited for it already; `owner`: the tenant whose share of lookups it uses.
    """
    invalid = host_error(host)
    if invalid is not None:
        raise BlockedAddress(invalid)
    name = _normalized(host)
    if name in METADATA_HOSTNAMES:
        raise BlockedAddress(f"{host} is a cloud metadata host name")
    literal = parse_ip_literal(name)
    if literal is not None:
        checked = _checked_literal(
            host, literal, tuple(settings.WEBHOOK_ALLOWED_NETWORKS)
        )
        if isinstance(checked, str):
            raise BlockedAddress(checked)
        return checked
    if is_localhost(name):
        answers = list(LOCALHOST_ANSWERS)
    elif looked_up is not None:
        answers = looked_up.result()
    else:
        answers = lookup(name, port, owner=owner)
    if not answers:
        raise socket.gaierror(f"{host} has no address")
    for _, answer in answers:
        address = ipaddress.ip_address(answer.split("%", 1)[0])
        reason = address_block_reason(address)
        if reason:
            raise BlockedAddress(f"{host} resolves to {reason}")
    family, address = answers[0]
    return ResolvedTarget(host=host, address=address, family=family)
