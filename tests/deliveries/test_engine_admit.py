"""The engine's admission batches: a small one waits a moment for more under load."""

import time
from types import SimpleNamespace

import pytest

from deliveries.engine import admit as admission
from deliveries.engine.engine import DeliveryEngine
from deliveries.engine.inbox import Job
from deliveries.services.scheduling import SKIPPED

# What the engine holds besides the test's jobs when it is "under load".
BACKLOG = admission.ADMIT_LINGER_BELOW


@pytest.fixture
def engine(monkeypatch):
    # A long linger, so that the test's own timing cannot blur it.
    monkeypatch.setattr(admission, "ADMIT_LINGER", 0.5)
    engine = DeliveryEngine(pool=SimpleNamespace(limit=4))
    engine.batches = []

    def admit(jobs: list[Job]) -> None:
        # Records the batch and settles it as the engine would a skipped one.
        engine.batches.append([job.delivery_id for job in jobs])
        engine._settle([(job, SKIPPED) for job in jobs])

    monkeypatch.setattr(engine, "_admit", admit)
    yield engine
    engine.stop(5)


def jobs(*ids: str) -> list[Job]:
    return [Job(delivery_id=i, ack=lambda: None, reject=lambda _: None) for i in ids]


@pytest.fixture
def under_load(engine):
    """The engine holds a backlog of other messages (in flight, parked)."""
    with engine._idle:
        engine._busy += BACKLOG
    yield
    with engine._idle:
        engine._busy -= BACKLOG


def wait_batches(engine: DeliveryEngine, count: int, timeout: float = 5) -> list:
    deadline = time.monotonic() + timeout
    while len(engine.batches) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return engine.batches


def test_small_batch_under_load_waits_for_the_next_messages(engine, under_load):
    # when: one message arrives, then two more 50 ms later (a consumer turn each)
    engine.submit(jobs("a"))
    time.sleep(0.05)
    engine.submit(jobs("b", "c"))

    # then: the three are admitted together
    assert wait_batches(engine, 1) == [["a", "b", "c"]]
    time.sleep(0.1)
    assert engine.batches == [["a", "b", "c"]]


def test_small_batch_under_load_waits_once_then_goes(engine, under_load):
    started = time.monotonic()

    # when: one message arrives and nothing follows
    engine.submit(jobs("a"))

    # then: it is admitted alone after the linger, not held longer
    assert wait_batches(engine, 1) == [["a"]]
    assert 0.4 < time.monotonic() - started < 2


def test_under_a_light_load_a_batch_goes_at_once(engine):
    # given: nothing else in hand
    started = time.monotonic()

    # when: one message arrives, then two more 100 ms later
    engine.submit(jobs("a"))
    assert wait_batches(engine, 1) == [["a"]]
    admitted_after = time.monotonic() - started
    time.sleep(0.1)
    engine.submit(jobs("b", "c"))

    # then: each batch went without waiting for more (no latency added)
    assert wait_batches(engine, 2) == [["a"], ["b", "c"]]
    assert admitted_after < 0.2


def test_a_full_enough_batch_goes_at_once_under_load(engine, under_load):
    started = time.monotonic()

    # when: a batch as large as the linger threshold arrives
    engine.submit(jobs(*(f"d{n}" for n in range(admission.ADMIT_LINGER_BELOW))))

    # then: it is admitted without waiting
    assert len(wait_batches(engine, 1)) == 1
    assert time.monotonic() - started < 0.2
