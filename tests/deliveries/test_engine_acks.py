"""The engine's acknowledgements: handed over in bursts, and counted before a stop."""

import threading
import time
from types import SimpleNamespace

import pytest

from deliveries.engine import settle as settling
from deliveries.engine.engine import DeliveryEngine
from deliveries.engine.inbox import Job
from deliveries.services.scheduling import SKIPPED


@pytest.fixture
def engine():
    engine = DeliveryEngine(pool=SimpleNamespace(limit=4))
    yield engine
    engine.stop(0)


def jobs(count: int, acked: list) -> list[Job]:
    def ack(number: int) -> None:
        acked.append((number, time.monotonic(), threading.get_ident()))

    return [
        Job(
            delivery_id=f"d{number}",
            ack=lambda number=number: ack(number),
            reject=lambda requeue: None,
        )
        for number in range(count)
    ]


def settle(engine: DeliveryEngine, batch: list[Job]) -> None:
    # As the engine does for messages it took (submit counts them busy).
    with engine._idle:
        engine._busy += len(batch)
    engine._settle([(job, SKIPPED) for job in batch])


def test_engine_acks_of_settles_close_together_go_out_in_one_burst(engine, monkeypatch):
    # given: a long window, so that the test's own timing cannot blur it
    monkeypatch.setattr(settling, "ACK_WINDOW", 0.5)
    acked: list = []
    first, second = jobs(6, acked)[:3], jobs(6, acked)[3:]

    # when: two batches are settled 50 ms apart
    settle(engine, first)
    time.sleep(0.05)
    second_settled = time.monotonic()
    settle(engine, second)

    # then: nothing was acknowledged before the second batch was settled, and
    # all six went out together, from the engine's ack thread
    assert engine.stop(5)
    assert sorted(number for number, _, _ in acked) == [0, 1, 2, 3, 4, 5]
    times = [at for _, at, _ in acked]
    assert min(times) > second_settled
    assert max(times) - min(times) < 0.05
    assert {thread for _, _, thread in acked} != {threading.get_ident()}


def test_engine_stop_waits_until_settled_messages_are_acknowledged(engine, monkeypatch):
    # given: settled messages whose acks are still held in the window
    monkeypatch.setattr(settling, "ACK_WINDOW", 0.3)
    acked: list = []
    settle(engine, jobs(4, acked))
    assert not acked

    # when: the worker stops
    drained = engine.stop(5)

    # then: the stop returned only once every ack was handed over
    assert drained
    assert len(acked) == 4
