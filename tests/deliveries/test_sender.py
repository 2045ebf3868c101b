"""The engine's sender: one event loop thread, many requests in flight, real servers."""

import threading
import time

import pytest

from deliveries import transport
from deliveries.envelope import signed_headers
from deliveries.models import AttemptOutcome
from deliveries.receiver import WebhookReceiver
from deliveries.transport import Sender

BODY = b'{"id":"evt_1","type":"t","data":{}}'


@pytest.fixture(autouse=True)
def _loopback_only(settings, _allow_loopback):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]


class Collected:
    """Results handed back by the sender, and when the last one came."""

    def __init__(self, expected: int):
        self.expected = expected
        self.results: list = []
        self.threads: set[str] = set()
        self.done = threading.Event()

    def __call__(self, result) -> None:
        self.results.append(result)
        self.threads.add(threading.current_thread().name)
        if len(self.results) == self.expected:
            self.done.set()


def request(url: str, **headers: str):
    prepared = transport.prepare(
        url=url, body=BODY, headers={"content-type": "application/json", **headers}
    )
    assert isinstance(prepared, transport.Request)
    return prepared


def test_sender_holds_many_slow_requests_in_flight_on_one_thread():
    # given: a receiver that takes 0.5 s per request, 40 requests at once
    sender = Sender()
    collected = Collected(40)
    with WebhookReceiver(delay=0.5) as receiver:
        started = time.monotonic()
        # when
        for _ in range(40):
            sender.submit(request(receiver.url), collected)
        assert collected.done.wait(10)
        elapsed = time.monotonic() - started
        # then: all in flight together, not one after another
        assert receiver.max_in_flight == 40
    assert elapsed < 3
    assert {r.outcome for r in collected.results} == {AttemptOutcome.SUCCESS}
    assert collected.threads == {"delivery-sender"}
    assert sender.in_flight == 0


def test_sender_hanging_receiver_times_out_without_holding_back_the_others(settings):
    settings.WEBHOOK_RESPONSE_TIMEOUT = 1
    sender = Sender()
    hanging, healthy = Collected(3), Collected(20)
    with (
        WebhookReceiver(delay=30) as dead,
        WebhookReceiver() as alive,
    ):
        started = time.monotonic()
        for _ in range(3):
            sender.submit(request(dead.url), hanging)
        for _ in range(20):
            sender.submit(request(alive.url), healthy)
        assert healthy.done.wait(5)
        healthy_elapsed = time.monotonic() - started
        assert hanging.done.wait(5)
        hanging_elapsed = time.monotonic() - started
    assert healthy_elapsed < 0.9  # before the hanging ones were cut
    assert {r.outcome for r in healthy.results} == {AttemptOutcome.SUCCESS}
    assert {r.outcome for r in hanging.results} == {AttemptOutcome.TIMEOUT}
    assert 0.9 <= hanging_elapsed < 3
    assert all("no response within 1 s" in r.error for r in hanging.results)


def test_sender_maps_failures_like_the_blocking_post():
    sender = Sender()
    collected = Collected(3)
    with WebhookReceiver(statuses=[500, 410, 301]) as receiver:
        for _ in range(3):
            sender.submit(request(receiver.url), collected)
        assert collected.done.wait(5)
    assert sorted((r.outcome, r.status) for r in collected.results) == sorted(
        [
            (AttemptOutcome.HTTP_5XX, 500),
            (AttemptOutcome.HTTP_4XX, 410),
            (AttemptOutcome.HTTP_OTHER, 301),
        ]
    )


def test_sender_reuses_connections_between_requests():
    sender = Sender()
    with WebhookReceiver() as receiver:
        for _ in range(5):
            collected = Collected(1)
            sender.submit(request(receiver.url), collected)
            assert collected.done.wait(5)
        assert receiver.connections_opened == 1


def test_post_large_body_goes_without_expect_continue(receiver):
    # libcurl would ask for 100-continue before a body over 1 KiB, and add Accept
    body = b'{"data":"' + b"x" * 20_000 + b'"}'
    result = transport.post(
        url=receiver.url, body=body, headers={"content-type": "application/json"}
    )
    assert result.outcome == AttemptOutcome.SUCCESS
    [received] = receiver.received
    assert received.body == body
    assert received.header("expect") is None
    assert received.header("accept") is None
    assert received.header("accept-encoding") == "identity"


def test_endpoint_headers_cannot_ask_for_expect_or_accept():
    headers = signed_headers(
        event_id="evt_1",
        body=BODY,
        secrets=[],
        extra={"Expect": "100-continue", "Accept": "text/html", "X-Team": "a"},
    )
    assert {name.lower() for name in headers} >= {"x-team", "webhook-id"}
    assert not {"expect", "accept"} & {name.lower() for name in headers}
