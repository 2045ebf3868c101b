"""deliveries.resolver's own machinery: shared lookups on reused threads.

Names here come from the hosts file and address literals (getaddrinfo answers
them without a network); a DNS server that answers late is in
test_netpolicy_dns.py and test_resolver_system.py.
"""

import socket
import threading
import time

import pytest

from deliveries import resolver

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
