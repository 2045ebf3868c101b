"""The system resolver (getaddrinfo) behind a real DNS server that answers late.

glibc reads its servers from /etc/resolv.conf, so the test runs the resolution in
a process of its own in new mount and network namespaces (`unshare`, as root):
there /etc/resolv.conf names 127.0.0.1, where tests/dnsserver.py answers on port
53, and glibc waits up to 10 s for an answer. A name answered at once proves the
lookups really go there; a name answered after 6 s shows that a caller waits no
longer than the connect timeout, and that callers of one name share one lookup.
"""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT

PUBLIC_IPV4 = "93.184.216.34"
CONNECT_TIMEOUT = 1

PROBE = textwrap.dedent(
    f"""
    import json, socket, threading, time
    import django
    django.setup()
    from deliveries.resolver import lookup
    from tests.dnsserver import ScriptedDNSServer

    with ScriptedDNSServer(port=53) as server:
        server.answer("fast.example.test", a=["{PUBLIC_IPV4}"])
        server.answer("slow.example.test", a=["{PUBLIC_IPV4}"])
        server.delay("slow.example.test", 6)
        fast = lookup("fast.example.test", 443)
        slow = []

        def resolve_slow():
            try:
                slow.append(lookup("slow.example.test", 443))
            except socket.gaierror as exc:
                slow.append(str(exc))

        started = time.monotonic()
        callers = [threading.Thread(target=resolve_slow) for _ in range(8)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        print(json.dumps({{
            "fast": fast,
            "slow": slow,
            "slow_seconds": time.monotonic() - started,
            "slow_queries": server.queries_for("slow.example.test"),
        }}))
    """
)


@pytest.fixture
def isolated_resolver(tmp_path):
    """A command prefix: new namespaces, loopback up, resolv.conf on 127.0.0.1."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is not installed")
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.1\noptions timeout:10 attempts:1\n")
    setup = (
        f'ip link set lo up && mount --bind {resolv_conf} /etc/resolv.conf && exec "$@"'
    )
    prefix = [unshare, "--mount", "--net", "sh", "-c", setup, "sh"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create namespaces here: {probe.stderr.strip()}")
    return prefix


def test_system_resolver_wait_is_bounded_and_shared(isolated_resolver, monkeypatch):
    # given: deliveries resolve with the system resolver, connect timeout 1 s
    monkeypatch.setenv("WEBHOOK_DNS_SERVERS", "")
    monkeypatch.setenv("WEBHOOK_CONNECT_TIMEOUT", str(CONNECT_TIMEOUT))
    # when: one name answered at once, then eight callers of one answered in 6 s
    done = subprocess.run(
        [*isolated_resolver, sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # then: getaddrinfo really asked the test's server
    assert [address for _, address in result["fast"]] == [PUBLIC_IPV4]
    # and every caller of the slow name gave up after the connect timeout,
    # not after the 6 s the answer took
    assert result["slow"] == ["slow.example.test: no answer within 1 s"] * 8
    assert CONNECT_TIMEOUT <= result["slow_seconds"] < CONNECT_TIMEOUT + 1.5
    # and the eight shared one lookup (glibc asks A and AAAA once each)
    assert sorted(result["slow_queries"]) == ["A", "AAAA"]
