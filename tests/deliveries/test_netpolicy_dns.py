"""The address policy through a real DNS server the test controls (WEBHOOK_DNS_SERVERS).

A UDP DNS server on 127.0.0.1 answers A and AAAA queries from a script per name;
deliveries resolve endpoint names through it. Names that resolve to internal
addresses are refused when saved and when delivered (recorded as a blocked
attempt), and an answer that changes between the check and the connect (DNS
rebinding) never reaches the internal address: a real receiver there gets nothing.
"""

import multiprocessing
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import trustme

from deliveries import transport
from deliveries.models import AttemptOutcome, DeliveryStatus
from deliveries.netpolicy import BlockedAddress, resolve
from deliveries.receiver import WebhookReceiver
from deliveries.services.attempts import delivery_run
from subscriptions.urlcheck import url_error
from tests.dnsserver import ScriptedDNSServer
from tests.factories import make_endpoint, make_event

PUBLIC_IPV4 = "93.184.216.34"
PUBLIC_IPV6 = "2606:2800:220:1:248:1893:25c8:1946"

# (A answers, AAAA answers) of a name that must be refused, and what the error says.
INTERNAL_ANSWERS = {
    "loopback": ((["127.0.0.1"], []), "127.0.0.1 is a loopback address"),
    "private": ((["10.1.2.3"], []), "10.1.2.3 is a private or reserved address"),
    "metadata": (
        (["169.254.169.254"], []),
        "169.254.169.254 is a link-local address",
    ),
    "ipv6-loopback": (([], ["::1"]), "::1 is a loopback address"),
    "ipv4-mapped": (
        ([], ["::ffff:127.0.0.1"]),
        "127.0.0.1 is a loopback address (embedded in ::ffff:7f00:1)",
    ),
    "public-and-loopback": (
        ([PUBLIC_IPV4], ["::1"]),
        "::1 is a loopback address",
    ),
}


@pytest.fixture
def dns_server(settings):
    """A scripted DNS server that deliveries resolve names with."""
    with ScriptedDNSServer() as server:
        settings.WEBHOOK_DNS_SERVERS = [server.address]
        yield server


@pytest.fixture
def nothing_allowed(settings, _allow_loopback):
    """The production default: no range opened (overrides the conftest's loopback)."""
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    return settings


def port_of(receiver: WebhookReceiver) -> int:
    return urlsplit(receiver.url).port


# --- resolution through the configured servers ------------------------------


def test_resolve_uses_the_configured_dns_server(nothing_allowed, dns_server):
    # given: a name only this server knows
    dns_server.answer("hooks.example.test", a=[PUBLIC_IPV4], aaaa=[PUBLIC_IPV6])
    # when
    target = resolve("hooks.example.test", 443)
    # then: both families asked, once each; IPv4 first
    assert (target.address, target.family) == (PUBLIC_IPV4, socket.AF_INET)
    assert dns_server.queries_for("hooks.example.test") == ["A", "AAAA"]


def test_resolve_ipv6_only_name(nothing_allowed, dns_server):
    dns_server.answer("v6.example.test", aaaa=[PUBLIC_IPV6])
    target = resolve("v6.example.test", 443)
    assert (target.address, target.family) == (PUBLIC_IPV6, socket.AF_INET6)


def test_resolve_unknown_name_is_a_resolution_error(nothing_allowed, dns_server):
    with pytest.raises(socket.gaierror):
        resolve("missing.example.test", 443)
    # Unresolvable now: accepted at save, re-checked at every delivery.
    assert url_error("https://missing.example.test/hook") is None


def test_resolve_silent_server_is_a_resolution_error_within_the_timeout(
    nothing_allowed, settings
):
    # given: a UDP port where nothing answers
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        host, port = silent.getsockname()
        settings.WEBHOOK_DNS_SERVERS = [f"{host}:{port}"]
        settings.WEBHOOK_CONNECT_TIMEOUT = 0.5
        # when / then
        with pytest.raises(socket.gaierror):
            resolve("slow.example.test", 443)


def test_concurrent_resolutions_of_one_name_share_one_lookup(
    nothing_allowed, dns_server
):
    # given: a server that takes 300 ms to answer for this name
    dns_server.answer("busy.example.test", a=[PUBLIC_IPV4])
    dns_server.delay("busy.example.test", 0.3)
    # when: eight deliveries to it resolve it at once
    with ThreadPoolExecutor(8) as pool:
        targets = list(pool.map(lambda _: resolve("busy.example.test", 443), range(8)))
    # then: all of them have the answer of one lookup (one A, one AAAA query)
    assert {target.address for target in targets} == {PUBLIC_IPV4}
    assert dns_server.queries_for("busy.example.test") == ["A", "AAAA"]
    # and a later resolution asks again (answers are shared, not cached)
    resolve("busy.example.test", 443)
    assert len(dns_server.queries_for("busy.example.test")) == 4


def test_forked_child_does_not_wait_for_its_parents_lookup(
    nothing_allowed, dns_server, settings
):
    # given: a lookup in flight in this process (answered after 1 s)
    dns_server.answer("forked.example.test", a=[PUBLIC_IPV4])
    dns_server.delay("forked.example.test", 1)
    settings.WEBHOOK_CONNECT_TIMEOUT = 4
    with ThreadPoolExecutor(1) as pool:
        parents = pool.submit(resolve, "forked.example.test", 443)
        while not dns_server.queries_for("forked.example.test"):
            time.sleep(0.01)
        # when: a child forked meanwhile (a prefork worker) resolves the name
        with multiprocessing.get_context("fork").Pool(1) as child:
            address = child.apply(_resolved_address, ("forked.example.test",))
        # then: it looked the name up itself, not waited on a thread it lacks
        assert address == PUBLIC_IPV4
        assert parents.result().address == PUBLIC_IPV4
    assert sorted(dns_server.queries_for("forked.example.test")) == [
        "A",
        "A",
        "AAAA",
        "AAAA",
    ]


def _resolved_address(name: str) -> str:
    return resolve(name, 443).address


def test_resolve_configured_servers_ignore_the_hosts_file(nothing_allowed, dns_server):
    # given: a name the hosts file maps to loopback (this machine's own name)
    hostname = socket.gethostname().lower()
    try:
        system = {info[4][0] for info in socket.getaddrinfo(hostname, 80)}
    except socket.gaierror:
        system = set()
    if not system or system == {PUBLIC_IPV4}:
        pytest.skip(f"the system resolver has no other answer for {hostname!r}")
    dns_server.answer(hostname, a=[PUBLIC_IPV4])
    # when / then: the configured server's answer, not the hosts file's
    assert resolve(hostname, 80).address == PUBLIC_IPV4


def test_localhost_is_loopback_whatever_the_configured_servers_say(
    nothing_allowed, dns_server
):
    # RFC 6761: localhost names never go to DNS
    dns_server.answer("localhost", a=[PUBLIC_IPV4])
    dns_server.answer("api.localhost", a=[PUBLIC_IPV4])
    for name in ("localhost", "api.localhost"):
        with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1 is a loopback"):
            resolve(name, 80)
    assert dns_server.queries == []


@pytest.mark.parametrize("case", INTERNAL_ANSWERS)
def test_resolve_name_with_internal_answer_is_blocked(
    nothing_allowed, dns_server, case
):
    (a, aaaa), reason = INTERNAL_ANSWERS[case]
    dns_server.answer("internal.example.test", a=a, aaaa=aaaa)
    with pytest.raises(BlockedAddress) as raised:
        resolve("internal.example.test", 80)
    assert str(raised.value) == f"internal.example.test resolves to {reason}"


# --- save time and delivery time ---------------------------------------------


@pytest.mark.parametrize("case", INTERNAL_ANSWERS)
def test_endpoint_save_refuses_name_with_internal_answer(
    nothing_allowed, dns_server, api, case
):
    # given
    (a, aaaa), reason = INTERNAL_ANSWERS[case]
    dns_server.answer("internal.example.test", a=a, aaaa=aaaa)
    # when
    response = api.post(
        "/api/v1/endpoints",
        {"url": "https://internal.example.test/hook"},
        format="json",
    )
    # then
    assert response.status_code == 400, response.content
    [message] = response.json()["url"]
    assert "outbound address policy" in message
    assert reason in message


@pytest.mark.parametrize("case", INTERNAL_ANSWERS)
def test_delivery_to_name_that_turned_internal_is_blocked_and_recorded(
    nothing_allowed, dns_server, api, tenant, receiver, case
):
    # given: the name answers a public address when the endpoint is saved, then
    # the internal one(s)
    (a, aaaa), reason = INTERNAL_ANSWERS[case]
    dns_server.script("turned.example.test", a=[[PUBLIC_IPV4], a], aaaa=[[], aaaa])
    url = f"http://turned.example.test:{port_of(receiver)}/"
    saved = api.post("/api/v1/endpoints", {"url": url}, format="json")
    assert saved.status_code == 201, saved.content
    _, [delivery] = make_event(tenant=tenant)
    # when
    delivery_run(delivery_id=delivery.pk)
    # then
    delivery.refresh_from_db()
    attempt = delivery.attempts.get()
    assert attempt.outcome == AttemptOutcome.BLOCKED
    assert attempt.error == f"turned.example.test resolves to {reason}"
    assert attempt.response_status is None
    assert delivery.status == DeliveryStatus.FAILED
    assert receiver.received == []


def https_receiver(settings, tmp_path, *, certified: str, trusted: bool = True):
    """An HTTPS receiver with a test CA's certificate for the name `certified`.

    `trusted`: deliveries trust that CA (WEBHOOK_CA_BUNDLE); else certifi's.
    """
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    settings.WEBHOOK_CA_BUNDLE = str(bundle) if trusted else ""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(certified).configure_cert(context)
    return WebhookReceiver(ssl_context=context)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_delivery_through_dns_reaches_an_allowed_receiver(
    settings, dns_server, tenant, tmp_path, scheme
):
    # The positive control: the same path delivers when the answer is allowed
    # (over HTTPS, TLS verifies the certificate for the name, not the address).
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    name = "hooks.example.test"
    receiver = (
        WebhookReceiver()
        if scheme == "http"
        else https_receiver(settings, tmp_path, certified=name)
    )
    with receiver:
        dns_server.answer(name, a=["127.0.0.1"])
        url = f"{scheme}://{name}:{port_of(receiver)}/in"
        make_endpoint(tenant=tenant, url=url)
        _, [delivery] = make_event(tenant=tenant)

        delivery_run(delivery_id=delivery.pk)

        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.SUCCEEDED
        [request] = receiver.received
        assert request.header("host") == f"hooks.example.test:{port_of(receiver)}"
        assert request.path == "/in"


@pytest.mark.parametrize(
    ("certified", "trusted", "error"),
    [
        ("someone-else.test", True, "hooks.example.test"),  # not for this name
        ("hooks.example.test", False, "unable to get local issuer"),  # unknown CA
    ],
)
def test_https_receiver_without_a_good_certificate_for_the_name_is_refused(
    settings, dns_server, tmp_path, certified, trusted, error
):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    receiver = https_receiver(settings, tmp_path, certified=certified, trusted=trusted)
    with receiver:
        dns_server.answer("hooks.example.test", a=["127.0.0.1"])
        result = transport.post(
            url=f"https://hooks.example.test:{port_of(receiver)}/",
            body=b"{}",
            headers={"content-type": "application/json"},
        )
    assert result.outcome == AttemptOutcome.CONNECTION_ERROR
    assert error in result.error
    assert receiver.received == []


# --- rebinding: the answer changes between the check and the connect ----------


@pytest.fixture
def two_receivers():
    """Receivers on 127.0.0.2 (allowed, "public") and 127.0.0.1 (blocked), same port."""
    with (
        WebhookReceiver(host="127.0.0.1") as internal,
        WebhookReceiver(host="127.0.0.2", port=port_of(internal)) as public,
    ):
        yield public, internal


def test_transport_connects_to_the_checked_address_when_the_answer_flips(
    settings, dns_server, two_receivers
):
    # given: only 127.0.0.2 is allowed; the first A answer is 127.0.0.2, every
    # later one 127.0.0.1, so any second resolution reaches `internal`
    name = "rebind.example.test"
    public, internal = two_receivers
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.2/32"]
    dns_server.script(name, a=[["127.0.0.2"], ["127.0.0.1"]])
    url = f"http://{name}:{port_of(internal)}/hook"
    # when
    first = transport.post(url=url, body=b"{}", headers={})
    second = transport.post(url=url, body=b"{}", headers={})
    # then: the first went to the checked 127.0.0.2, under the name's Host
    assert first.outcome == AttemptOutcome.SUCCESS, first.error
    assert public.wait_for(1)
    [request] = public.received
    assert request.header("host") == f"{name}:{port_of(internal)}"
    # the second saw the rebound answer, was refused, and nothing reached 127.0.0.1
    assert second.outcome == AttemptOutcome.BLOCKED
    assert second.error == f"{name} resolves to 127.0.0.1 is a loopback address"
    assert internal.received == []
    assert len(public.received) == 1
    # one A query per delivery: resolved once, never again at connect time
    assert dns_server.queries_for(name) == ["A", "AAAA", "A", "AAAA"]


def test_delivery_rebound_after_save_never_reaches_the_internal_receiver(
    settings, dns_server, two_receivers, api, tenant
):
    # given: saved while the name answered 127.0.0.2 (allowed)
    public, internal = two_receivers
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.2/32"]
    dns_server.script("rebind.example.test", a=[["127.0.0.2"], ["127.0.0.1"]])
    url = f"http://rebind.example.test:{port_of(internal)}/"
    saved = api.post("/api/v1/endpoints", {"url": url}, format="json")
    assert saved.status_code == 201, saved.content
    _, [delivery] = make_event(tenant=tenant)
    # when: the delivery resolves again and now gets 127.0.0.1
    delivery_run(delivery_id=delivery.pk)
    # then
    attempt = delivery.attempts.get()
    assert attempt.outcome == AttemptOutcome.BLOCKED
    assert (
        attempt.error
        == "rebind.example.test resolves to 127.0.0.1 is a loopback address"
    )
    assert internal.received == []
    assert public.received == []


def test_deliveries_use_their_tenants_share_of_lookups(
    settings, dns_server, tenant, other_api, receiver, monkeypatch
):
    # given: one lookup in flight per tenant at most; tenant A's is taken by a
    # name that hangs
    from deliveries import resolver

    monkeypatch.setattr(resolver, "MAX_LOOKUPS_PER_OWNER", 1)
    settings.WEBHOOK_CONNECT_TIMEOUT = 2
    dns_server.answer("hang.tenant-a.test", a=[PUBLIC_IPV4])
    dns_server.delay("hang.tenant-a.test", 30)
    dns_server.answer("other.tenant-a.test", a=["127.0.0.1"])
    dns_server.answer("hooks.tenant-b.test", a=["127.0.0.1"])
    held = resolver.lookup_later("hang.tenant-a.test", 443, owner=str(tenant.pk))
    port = port_of(receiver)
    make_endpoint(tenant=tenant, url=f"http://other.tenant-a.test:{port}/")
    make_endpoint(tenant=other_api.tenant, url=f"http://hooks.tenant-b.test:{port}/")
    _, [mine] = make_event(tenant=tenant)
    _, [theirs] = make_event(tenant=other_api.tenant)
    # when
    delivery_run(delivery_id=mine.pk)
    delivery_run(delivery_id=theirs.pk)
    # then: tenant A's delivery waits for its share, tenant B's goes
    assert "for its tenant" in mine.attempts.get().error
    theirs.refresh_from_db()
    assert theirs.status == DeliveryStatus.SUCCEEDED
    with pytest.raises(socket.gaierror):
        held.result(5)
