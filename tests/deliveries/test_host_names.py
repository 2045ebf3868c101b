"""One reading of a host name: Python's URL parsing and libcurl agree on where a
delivery goes.

libcurl decodes percent-escapes in a URL's host and reads other characters its own
way, while the address policy checks the host as Python's `urlsplit` reads it. An
endpoint URL's host must therefore be an IP literal or a plain DNS name (refused
otherwise when saved, and again when a request is prepared, for rows saved
earlier), and the connection is pinned to the checked address whatever host text
libcurl reads. Both resolver modes are tested with a real scripted DNS server: one
where deliveries ask it (`WEBHOOK_DNS_SERVERS`), and the system resolver in a
network namespace whose resolv.conf names it.
"""

import json
import shutil
import socket
import subprocess
import sys
import textwrap
from urllib.parse import urlsplit

import pytest

from deliveries.models import AttemptOutcome
from deliveries.netpolicy import ResolvedTarget, host_error
from deliveries.receiver import WebhookReceiver
from deliveries.services.attempts import delivery_run
from deliveries.transport import Request, perform
from deliveries.transport.request import pinned_to
from subscriptions.urlcheck import url_error
from tests.conftest import REPO_ROOT
from tests.dnsserver import ScriptedDNSServer
from tests.factories import make_endpoint, make_event

# Host texts that one reader could take for another name than the other. The
# first is the attack: libcurl reads "localhost" (127.0.0.1), while the check
# looks up the raw text, which the attacker's DNS answers with a public address.
HOSTILE_HOSTS = {
    "percent-escape": "loc%61lhost",
    "percent-dot": "evil%2Eexample.test",
    "nul": "localhost%00.example.test",
    "backslash": "ex\\ample.test",
    "non-ascii": "l\u043ecalhost",  # a Cyrillic "o"
    "fullwidth-dot": "example\uff0etest",
    "empty-label": "a..example.test",
    "zone-id": "[fe80::1%25lo]",
}
ODD_IPV4_SPELLINGS = ["127.1", "0x7f000001", "2130706433", "0177.0.0.1"]
VALID_HOSTS = [
    "example.com",
    "hooks.example.com.",
    "a_b-c.example.com",
    "xn--bcher-kva.example",
    "93.184.216.34",
    "[2606:2800:220:1:248:1893:25c8:1946]",
]


def port_of(receiver: WebhookReceiver) -> int:
    return urlsplit(receiver.url).port


@pytest.fixture
def two_receivers():
    """Receivers on 127.0.0.2 (allowed, "public") and 127.0.0.1 (blocked), same port."""
    with (
        WebhookReceiver(host="127.0.0.1") as internal,
        WebhookReceiver(host="127.0.0.2", port=port_of(internal)) as public,
    ):
        yield public, internal


@pytest.fixture
def dns_server(settings):
    """A scripted DNS server that deliveries resolve names with."""
    with ScriptedDNSServer() as server:
        settings.WEBHOOK_DNS_SERVERS = [server.address]
        yield server


# --- the syntax ---------------------------------------------------------------


@pytest.mark.parametrize("host", VALID_HOSTS)
def test_host_error_accepts_ip_literals_and_plain_dns_names(host):
    assert host_error(urlsplit(f"http://{host}/").hostname) is None


@pytest.mark.parametrize("case", HOSTILE_HOSTS)
def test_url_error_refuses_a_host_libcurl_could_read_otherwise(case):
    error = url_error(f"http://{HOSTILE_HOSTS[case]}/hook")
    assert error is not None
    assert error.startswith("URL host ")


@pytest.mark.parametrize("host", ODD_IPV4_SPELLINGS)
def test_url_error_refuses_odd_ipv4_spellings(host):
    # Allowed networks open loopback in the tests: the spelling alone is refused.
    assert "four decimal numbers" in url_error(f"http://{host}:9000/")


def test_url_error_refuses_an_overlong_name():
    name = ".".join(["a" * 63] * 4)  # 255 characters
    assert "not a valid host name" in url_error(f"http://{name}/")


# --- save time: create, PATCH and PUT -------------------------------------------


@pytest.mark.parametrize("case", HOSTILE_HOSTS)
def test_endpoint_api_refuses_hostile_hosts_on_create_patch_and_put(api, case):
    url = f"http://{HOSTILE_HOSTS[case]}/hook"
    created = api.post("/api/v1/endpoints", {"url": url}, format="json")
    assert created.status_code == 400, created.content
    assert "URL host" in created.json()["url"][0]

    saved = api.post(
        "/api/v1/endpoints", {"url": "http://127.0.0.1:9/"}, format="json"
    ).json()
    path = f"/api/v1/endpoints/{saved['id']}"
    patched = api.patch(path, {"url": url}, format="json")
    assert patched.status_code == 400, patched.content
    assert "URL host" in patched.json()["url"][0]
    put = api.put(path, {"url": url, "event_types": []}, format="json")
    assert put.status_code == 400, put.content
    assert "URL host" in put.json()["url"][0]
    assert api.get(path).json()["url"] == "http://127.0.0.1:9/"


@pytest.mark.parametrize("host", [*ODD_IPV4_SPELLINGS, "localhost", "api.localhost"])
def test_endpoint_save_with_dns_servers_refuses_odd_ipv4_and_localhost(
    settings, dns_server, api, host
):
    # given: production's policy, names answered by the configured server only
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    dns_server.answer(host, a=["93.184.216.34"])  # never asked: refused before
    # when
    response = api.post("/api/v1/endpoints", {"url": f"http://{host}/"}, format="json")
    # then
    assert response.status_code == 400, response.content
    [message] = response.json()["url"]
    assert "four decimal numbers" in message or "127.0.0.1 is a loopback" in message
    assert dns_server.queries_for(host) == []


# --- delivery time: rows saved before the check, and the pin --------------------


@pytest.mark.parametrize("case", ["percent-escape", "nul", "backslash", "non-ascii"])
def test_delivery_to_a_stored_hostile_host_is_blocked_with_dns_servers(
    settings, dns_server, two_receivers, tenant, case
):
    # given: the raw text resolves to the allowed 127.0.0.2 through the
    # configured server, and libcurl's reading of it would be 127.0.0.1
    public, internal = two_receivers
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.2/32"]
    host = HOSTILE_HOSTS[case]
    dns_server.answer(host, a=["127.0.0.2"])
    dns_server.answer("localhost", a=["127.0.0.2"])
    make_endpoint(tenant=tenant, url=f"http://{host}:{port_of(internal)}/")
    _, [delivery] = make_event(tenant=tenant)
    # when
    delivery_run(delivery_id=delivery.pk)
    # then: refused before any lookup or connection
    attempt = delivery.attempts.get()
    assert attempt.outcome == AttemptOutcome.BLOCKED
    assert "not" in attempt.error and "host name" in attempt.error
    assert internal.received == []
    assert public.received == []
    assert dns_server.queries == []


def test_pin_holds_whatever_host_text_libcurl_reads(settings, two_receivers):
    # given: a request whose URL libcurl reads as "localhost" (127.0.0.1), pinned
    # to the checked 127.0.0.2
    public, internal = two_receivers
    port = port_of(internal)
    target = ResolvedTarget("loc%61lhost", "127.0.0.2", socket.AF_INET)
    request = Request(
        url=f"http://loc%61lhost:{port}/",
        body=b"{}",
        header_lines=[],
        connect_to=pinned_to(target, port),
        https=False,
    )
    # when
    result = perform(request)
    # then: it went to the checked address, never to libcurl's own answer
    assert result.outcome == AttemptOutcome.SUCCESS, result.error
    assert public.wait_for(1)
    assert internal.received == []


def test_pin_holds_for_ip_literals_too(two_receivers):
    public, internal = two_receivers
    port = port_of(internal)
    target = ResolvedTarget("127.0.0.1", "127.0.0.2", socket.AF_INET)
    request = Request(
        url=f"http://127.0.0.1.:{port}/",
        body=b"{}",
        header_lines=[],
        connect_to=pinned_to(target, port),
        https=False,
    )
    assert perform(request).outcome == AttemptOutcome.SUCCESS
    assert public.wait_for(1)
    assert internal.received == []


# --- the system resolver, in a network namespace of its own ---------------------

SYSTEM_PROBE = textwrap.dedent(
    """
    import json, socket, sys
    import django
    django.setup()
    from deliveries import transport
    from deliveries.models import AttemptOutcome
    from deliveries.netpolicy import ResolvedTarget
    from deliveries.receiver import WebhookReceiver
    from deliveries.transport.request import pinned_to
    from subscriptions.urlcheck import url_error
    from tests.dnsserver import ScriptedDNSServer

    hosts = json.loads(sys.argv[1])
    report = {"hosts": {}}
    with (
        ScriptedDNSServer(port=53) as dns,
        WebhookReceiver(host="127.0.0.1") as internal,
        WebhookReceiver(
            host="127.0.0.2", port=int(internal.url.rsplit(":", 1)[1].strip("/"))
        ) as public,
    ):
        for host in hosts:
            dns.answer(host, a=["127.0.0.2"])
        # glibc reads a backslash as an escape: "ex\\ample.test" asks example.test
        dns.answer("example.test", a=["127.0.0.1"])
        dns.answer("public.example.test", a=["127.0.0.2"])
        port = int(internal.url.rsplit(":", 1)[1].strip("/"))
        for host in hosts:
            url = f"http://{host}:{port}/"
            result = transport.post(url=url, body=b"{}", headers={})
            report["hosts"][host] = {
                "saved": url_error(url),
                "outcome": result.outcome,
                "error": result.error,
            }
        control = transport.post(
            url=f"http://public.example.test:{port}/", body=b"{}", headers={}
        )
        report["control"] = control.outcome
        pinned = transport.perform(transport.Request(
            url=f"http://loc%61lhost:{port}/", body=b"{}", header_lines=[],
            connect_to=pinned_to(
                ResolvedTarget("loc%61lhost", "127.0.0.2", socket.AF_INET), port
            ),
            https=False,
        ))
        report["pinned"] = pinned.outcome
        public.wait_for(2)
        report["public"] = len(public.received)
        report["internal"] = len(internal.received)
    print(json.dumps(report))
    """
)


def test_hostile_hosts_never_reach_the_internal_address_with_the_system_resolver(
    tmp_path, monkeypatch
):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is not installed")
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    setup = (
        f'ip link set lo up && mount --bind {resolv_conf} /etc/resolv.conf && exec "$@"'
    )
    prefix = [unshare, "--mount", "--net", "sh", "-c", setup, "sh"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create namespaces here: {probe.stderr.strip()}")
    # given: the system resolver, only 127.0.0.2 allowed ("public")
    monkeypatch.setenv("WEBHOOK_DNS_SERVERS", "")
    monkeypatch.setenv("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.2/32")
    monkeypatch.setenv("WEBHOOK_CONNECT_TIMEOUT", "2")
    hosts = [HOSTILE_HOSTS[case] for case in HOSTILE_HOSTS if case != "zone-id"]
    # when
    done = subprocess.run(
        [*prefix, sys.executable, "-c", SYSTEM_PROBE, json.dumps(hosts)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # then: each refused when saved and when sent
    for host, seen in report["hosts"].items():
        assert seen["saved"] and seen["saved"].startswith("URL host"), host
        assert seen["outcome"] == AttemptOutcome.BLOCKED, (host, seen)
    # the resolver path itself works there, and the pin holds
    assert report["control"] == AttemptOutcome.SUCCESS
    assert report["pinned"] == AttemptOutcome.SUCCESS
    assert report["public"] == 2
    assert report["internal"] == 0
