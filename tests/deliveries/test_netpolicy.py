"""The outbound address policy (deliveries.netpolicy) and endpoint URL validation.

Blocked by default: loopback, private, link-local, CGNAT, multicast, reserved and
cloud-metadata destinations, in IPv4 and IPv6 (IPv4-mapped, 6to4 and NAT64 forms
included). The odd IPv4 spellings glibc's resolver and libcurl accept (`127.1`,
decimal, hex, octal) are no valid host at all. `WEBHOOK_ALLOWED_NETWORKS` opens
ranges on purpose.
"""

import socket
from urllib.parse import urlsplit

import pytest

from deliveries import transport
from deliveries.models import AttemptOutcome
from deliveries.netpolicy import BlockedAddress, ResolvedTarget, resolve
from subscriptions.urlcheck import url_error

POLICY_MESSAGE = "outbound address policy"

# Odd IPv4 spellings of 127.0.0.1 that are not IP literals to `ipaddress`, but
# are to glibc's inet_aton and to libcurl: refused as hosts, whatever is allowed.
ODD_LOOPBACK_SPELLINGS = ["127.1", "2130706433", "0x7f000001", "0177.0.0.1"]

BLOCKED_HOSTS = [
    "127.0.0.1",
    *ODD_LOOPBACK_SPELLINGS,
    "0.0.0.0",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "224.0.0.1",
    "240.0.0.1",
    "::1",
    "[::1]",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:10.0.0.1",
    "fc00::1",
    "fd12::1",
    "fe80::1",
    "64:ff9b::a00:1",
    "2002:7f00:1::",
    "localhost",
    "metadata.google.internal",
    "metadata",
]

PUBLIC_IPV4 = "93.184.216.34"
PUBLIC_IPV6 = "2606:2800:220:1:248:1893:25c8:1946"


@pytest.fixture
def nothing_allowed(settings, _allow_loopback):
    """The production default: no range opened (overrides the conftest's loopback)."""
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    return settings


def port_of(receiver) -> int:
    """The port a started WebhookReceiver listens on."""
    return urlsplit(receiver.url).port


def url_for(host: str, port: int | None = None) -> str:
    """An http URL for `host`, bracketing bare IPv6 literals."""
    netloc = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"http://{netloc}/"


@pytest.mark.parametrize("host", BLOCKED_HOSTS)
def test_resolve_blocks_non_public_destination_by_default(nothing_allowed, host):
    with pytest.raises(BlockedAddress):
        resolve(host, 80)


@pytest.mark.parametrize(
    "host", [host for host in BLOCKED_HOSTS if host not in ODD_LOOPBACK_SPELLINGS]
)
def test_url_error_names_address_policy_by_default(nothing_allowed, host):
    error = url_error(url_for(host))
    assert error is not None
    assert POLICY_MESSAGE in error


@pytest.mark.parametrize(
    "host",
    [
        "LOCALHOST",
        "localhost.",
        "Metadata.Google.Internal.",
        "metadata.goog",
        "instance-data",
        "127.0.0.1.",
        "::",
        "100.100.100.200",
        "192.0.0.192",
        "168.63.129.16",
        "::ffff:168.63.129.16",
        "fd00:ec2::254",
        "255.255.255.255",
    ],
)
def test_resolve_blocks_case_trailing_dot_and_metadata_variants(nothing_allowed, host):
    with pytest.raises(BlockedAddress):
        resolve(host, 80)


@pytest.mark.parametrize("host", ODD_LOOPBACK_SPELLINGS)
def test_resolve_refuses_odd_ipv4_spellings_without_a_lookup(settings, host):
    # glibc reads every one as 127.0.0.1, and libcurl too: one reading for all
    # means none is a host, even with loopback allowed.
    [address] = {info[4][0] for info in socket.getaddrinfo(host, 80)}
    assert address == "127.0.0.1"
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    with pytest.raises(BlockedAddress, match="four decimal numbers"):
        resolve(host, 80)
    assert "four decimal numbers" in url_error(url_for(host))


@pytest.mark.parametrize("host", ODD_LOOPBACK_SPELLINGS)
@pytest.mark.parametrize("allowed", [[], ["127.0.0.0/8"]])
def test_transport_post_odd_spelling_never_connects(settings, receiver, host, allowed):
    # given a live receiver that the odd spelling would reach
    settings.WEBHOOK_ALLOWED_NETWORKS = allowed
    url = url_for(host, port_of(receiver))
    # when
    result = transport.post(url=url, body=b"{}", headers={})
    # then
    assert result.outcome == AttemptOutcome.BLOCKED
    assert result.status is None
    assert receiver.received == []


@pytest.mark.parametrize(
    ("host", "family"),
    [
        (PUBLIC_IPV4, socket.AF_INET),
        (PUBLIC_IPV6, socket.AF_INET6),
        (f"[{PUBLIC_IPV6}]", socket.AF_INET6),
    ],
)
def test_resolve_allows_public_literal(nothing_allowed, host, family):
    target = resolve(host, 443)
    assert target == ResolvedTarget(host=host, address=host.strip("[]"), family=family)


@pytest.mark.parametrize("host", [PUBLIC_IPV4, PUBLIC_IPV6])
def test_url_error_accepts_public_literal(nothing_allowed, host):
    assert url_error(url_for(host) + "hook?x=1") is None


def test_resolve_allowed_ipv4_network_opens_only_that_range(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert resolve("127.0.0.1", 80).address == "127.0.0.1"
    assert resolve("127.5.6.7", 80).address == "127.5.6.7"
    with pytest.raises(BlockedAddress):
        resolve("10.0.0.1", 80)
    with pytest.raises(BlockedAddress):
        resolve("::1", 80)
    assert url_error("http://127.0.0.1:9000/") is None
    assert POLICY_MESSAGE in url_error("http://10.0.0.1/")


def test_resolve_allowed_ipv6_network_opens_ipv6_loopback(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["::1/128"]
    target = resolve("::1", 80)
    assert (target.address, target.family) == ("::1", socket.AF_INET6)
    assert resolve("[::1]", 80).address == "::1"
    assert url_error("http://[::1]:8080/") is None
    with pytest.raises(BlockedAddress):
        resolve("127.0.0.1", 80)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://example.com/file", "scheme must be http or https"),
        ("http:///path-only", "must have a host"),
        ("http://", "must have a host"),
        ("https://user:pw@example.com/", "must not carry credentials"),
        ("https://token@example.com/", "must not carry credentials"),
        ("https://example.com/" + "a" * 2030, "longer than 2048"),
        ("https://example.com/a b", "whitespace"),
        ("https://example.com/a\tb", "whitespace"),
        (" https://example.com/", "whitespace"),
        ("https://example.com:99999/", "Invalid URL"),
    ],
)
def test_url_error_rejects_malformed_url(nothing_allowed, url, expected):
    error = url_error(url)
    assert error is not None
    assert expected in error


def test_url_error_length_limit_is_inclusive(nothing_allowed):
    base = f"https://{PUBLIC_IPV4}/"
    assert url_error(base + "a" * (2048 - len(base))) is None
    assert "longer than 2048" in url_error(base + "a" * (2049 - len(base)))


def test_url_error_accepts_unresolvable_name(nothing_allowed):
    # Unresolvable now: accepted at save, every delivery re-checks it.
    assert url_error("https://does-not-exist.invalid/hook") is None


def test_transport_post_connects_to_the_checked_address(settings, receiver):
    """No DNS-rebinding gap: the name is resolved once, every answer checked."""
    # localhost is 127.0.0.1 and ::1 (RFC 6761), without asking any resolver
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
    port = port_of(receiver)
    url = f"http://localhost:{port}/"

    result = transport.post(url=url, body=b"{}", headers={})

    # IPv4 first: the checked 127.0.0.1, where the receiver listens; Host keeps
    # the name
    assert result.outcome == AttemptOutcome.SUCCESS, result.error
    assert receiver.wait_for(1)
    [request] = receiver.received
    assert request.header("host") == f"localhost:{port}"


def test_transport_post_refuses_localhost_when_one_loopback_is_not_allowed(
    settings, receiver
):
    # ::1 is outside the allowed range: the whole name is refused, whichever
    # address the connection would have used.
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    result = transport.post(
        url=f"http://localhost:{port_of(receiver)}/", body=b"{}", headers={}
    )
    assert result.outcome == AttemptOutcome.BLOCKED
    assert result.error == "localhost resolves to ::1 is a loopback address"
    assert receiver.received == []
