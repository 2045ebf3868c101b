"""A real worker's engine beside endpoints whose names never resolve in time.

The worker resolves endpoint names with a real DNS server (tests/dnsserver.py)
that answers two names only after a minute. Their deliveries fail as connection
errors after the connect timeout, and meanwhile deliveries to a name that
resolves at once go through without waiting: the lookups that hang hold no
thread of the worker's pool.
"""

import time
from urllib.parse import urlsplit

import pytest

from deliveries.models import AttemptOutcome, DeliveryAttempt
from tests.conftest import wait_until
from tests.dnsserver import ScriptedDNSServer
from tests.factories import make_endpoint, make_event

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HANGING_NAMES = ("hangs-1.example.test", "hangs-2.example.test")
CONNECT_TIMEOUT = 3
POOL_THREADS = 8


def test_names_that_hang_do_not_hold_up_deliveries_to_other_names(
    tenant, receiver, worker_factory
):
    port = urlsplit(receiver.url).port
    with ScriptedDNSServer() as dns_server:
        # given: two endpoints whose names answer in 60 s, one that answers at once
        dns_server.answer("quick.example.test", a=["127.0.0.1"])
        for name in HANGING_NAMES:
            dns_server.answer(name, a=["127.0.0.1"])
            dns_server.delay(name, 60)
            make_endpoint(
                tenant=tenant,
                url=f"http://{name}:{port}/hook",
                event_types=["hangs.event"],
            )
        make_endpoint(
            tenant=tenant,
            url=f"http://quick.example.test:{port}/hook",
            event_types=["quick.event"],
        )
        worker_factory(
            concurrency=POOL_THREADS,
            WEBHOOK_DNS_SERVERS=dns_server.address,
            WEBHOOK_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
        )
        # and: more deliveries waiting on those names than the pool has threads
        # (twice as many, and fewer than the worker's prefetch, 4 per thread)
        for _ in range(POOL_THREADS):
            make_event(tenant=tenant, event_type="hangs.event")
        wait_until(lambda: len(dns_server.queries_for(HANGING_NAMES[1])) > 0)
        # when: deliveries to the quick name come while those lookups hang
        started = time.monotonic()
        for _ in range(5):
            make_event(tenant=tenant, event_type="quick.event")
        # then: they arrive well before a hanging lookup's timeout
        assert receiver.wait_for(5, timeout=CONNECT_TIMEOUT * 3)
        assert time.monotonic() - started < CONNECT_TIMEOUT - 1
        # and the hanging names' attempts end as connection errors at the timeout
        hung = wait_until(
            lambda: list(
                DeliveryAttempt.objects.filter(
                    delivery__endpoint__url__contains="hangs-"
                )
            ),
            timeout=CONNECT_TIMEOUT * 4,
        )
    assert {attempt.outcome for attempt in hung} == {AttemptOutcome.CONNECTION_ERROR}
    assert all(
        f"no answer within {CONNECT_TIMEOUT} s" in attempt.error for attempt in hung
    )
    # and their durations count the wait for the name (those that joined a
    # lookup under way waited less)
    assert max(attempt.duration_ms for attempt in hung) >= CONNECT_TIMEOUT * 1000 - 100
    assert len(receiver.received) == 5  # nothing reached the receiver by those names
