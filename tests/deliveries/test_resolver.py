"""deliveries.resolver's own machinery: shared lookups on reused threads.

Names come from the hosts file and address literals (getaddrinfo answers them
without a network), or from a DNS server of the test's that answers late
(tests/dnsserver.py; the system resolver against one: test_resolver_system.py).
"""

import socket
import threading
import time

import pytest

from deliveries import resolver
from tests.dnsserver import ScriptedDNSServer

NAMES = {"localhost": "127.0.0.1", "127.0.0.2": "127.0.0.2", "::1": "::1"}


@pytest.fixture
def system_resolver(settings):
    settings.WEBHOOK_DNS_SERVERS = []


def lookup_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dns-lookup"]


def test_many_concurrent_lookups_all_answer(system_resolver):
    # given: 16 callers looking up three names 300 times each, all at once
    wrong: list = []

    def caller(offset: int) -> None:
        names = list(NAMES)
        for i in range(300):
            name = names[(offset + i) % len(names)]
            addresses = {address for _, address in resolver.lookup(name, 443)}
            if NAMES[name] not in addresses:
                wrong.append((name, addresses))

    callers = [threading.Thread(target=caller, args=(n,)) for n in range(16)]
    started = time.monotonic()
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(30)
    # then: every one answered, right, and nothing is left in flight
    assert not any(thread.is_alive() for thread in callers)
    assert wrong == []
    assert time.monotonic() - started < 30
    assert resolver._in_flight == {}
    # and the lookups ran on a few threads that stay for the next ones, not one
    # thread each (a thread is started only when none waits for work)
    assert 1 <= len(lookup_threads()) <= 32


def test_idle_lookup_thread_ends_and_a_new_one_starts(system_resolver, monkeypatch):
    # given: lookup threads that end after 50 ms without work
    monkeypatch.setattr(resolver, "IDLE_SECONDS", 0.05)
    ran_on: list[threading.Thread] = []
    looked_up = resolver.lookup_later("localhost", 80)
    looked_up.add_done_callback(lambda _: ran_on.append(threading.current_thread()))
    looked_up.result()
    [thread] = ran_on
    if thread is threading.current_thread():  # done before the callback was added
        pytest.skip("the lookup finished before its thread could be seen")
    # when: nothing more comes
    thread.join(5)
    # then: that thread ended
    assert not thread.is_alive()
    # and a lookup after that still answers (on another thread)
    assert resolver.lookup("127.0.0.2", 80) == [(socket.AF_INET, "127.0.0.2")]


def test_lookup_past_its_deadline_fails_and_the_next_caller_asks_again(settings):
    # given: a server that answers only after 5 s, callers that wait 0.3 s
    with ScriptedDNSServer() as dns_server:
        dns_server.answer("late.example.test", a=["93.184.216.34"])
        dns_server.delay("late.example.test", 5)
        settings.WEBHOOK_DNS_SERVERS = [dns_server.address]
        settings.WEBHOOK_CONNECT_TIMEOUT = 0.3
        # when: one caller waits for the name
        started = time.monotonic()
        with pytest.raises(socket.gaierror, match=r"no answer within 0\.3 s"):
            resolver.lookup("late.example.test", 443)
        # then: it gave up at the deadline, not when the resolver would have
        assert time.monotonic() - started < 1.0
        assert dns_server.queries_for("late.example.test") == ["A"]
        # and the next caller starts a lookup of its own
        with pytest.raises(socket.gaierror):
            resolver.lookup("late.example.test", 443)
        assert dns_server.queries_for("late.example.test") == ["A", "A"]


def test_lookups_beyond_the_in_flight_guard_fail_at_once(settings, monkeypatch):
    # given: room for one lookup in flight, taken by a name that answers late
    monkeypatch.setattr(resolver, "MAX_LOOKUPS_IN_FLIGHT", 1)
    with ScriptedDNSServer() as dns_server:
        dns_server.answer("late.example.test", a=["93.184.216.34"])
        dns_server.delay("late.example.test", 5)
        dns_server.answer("other.example.test", a=["93.184.216.35"])
        settings.WEBHOOK_DNS_SERVERS = [dns_server.address]
        settings.WEBHOOK_CONNECT_TIMEOUT = 1
        held = resolver.lookup_later("late.example.test", 443)
        # when / then: another name is refused at once, without a query
        started = time.monotonic()
        with pytest.raises(socket.gaierror, match="too many name lookups in flight"):
            resolver.lookup("other.example.test", 443)
        assert time.monotonic() - started < 0.1
        assert dns_server.queries_for("other.example.test") == []
        # and the name already in flight is still shared
        assert resolver.lookup_later("late.example.test", 443) is held
        with pytest.raises(socket.gaierror):
            held.result()


def test_a_tenant_whose_names_hang_holds_only_its_share(settings, monkeypatch):
    # given: a DNS server that never answers tenant A's names (within the test),
    # and answers tenant B's at once; 16 lookups in flight at most, 4 per tenant
    monkeypatch.setattr(resolver, "MAX_LOOKUPS_IN_FLIGHT", 16)
    monkeypatch.setattr(resolver, "MAX_LOOKUPS_PER_OWNER", 4)
    settings.WEBHOOK_CONNECT_TIMEOUT = 3
    with ScriptedDNSServer() as server:
        settings.WEBHOOK_DNS_SERVERS = [server.address]
        hanging = [f"hang{n}.tenant-a.test" for n in range(20)]
        for name in hanging:
            server.answer(name, a=["93.184.216.34"])
            server.delay(name, 60)
        server.answer("fine.tenant-b.test", a=["93.184.216.35"])
        # when: tenant A starts twenty lookups that hang
        futures = [resolver.lookup_later(name, 443, owner="a") for name in hanging]
        # then: four are in flight, the rest refused at once for its tenant
        refused = [future for future in futures if future.done()]
        assert len(refused) == 16
        assert "too many name lookups in flight for its tenant" in str(
            refused[0].exception()
        )
        # and tenant B's lookups still go through, at once
        started = time.monotonic()
        answers = resolver.lookup("fine.tenant-b.test", 443, owner="b")
        assert answers == [(socket.AF_INET, "93.184.216.35")]
        assert time.monotonic() - started < 1
        # and tenant A's share comes back once its lookups gave up
        for future in futures:
            with pytest.raises(socket.gaierror):
                future.result(5)
        assert resolver._by_owner == {}
        assert resolver._in_flight == {}
