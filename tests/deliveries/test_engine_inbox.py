"""The admit thread's inbox: each kind apart, one wake-up per signal, bounded."""

import threading
import time
from collections import Counter

from deliveries.engine.inbox import BATCH_MAX, Inbox, Job


def jobs(count: int) -> list[Job]:
    return [
        Job(delivery_id=f"d{n}", ack=lambda: None, reject=lambda _: None)
        for n in range(count)
    ]


def no_linger(_batch: int) -> float:
    return 0.0


def test_take_gives_each_kind_apart_and_at_most_a_batch_of_jobs():
    inbox = Inbox()
    inbox.put_jobs(jobs(BATCH_MAX + 5))
    inbox.put_woken(Counter({"e1": 2}))
    inbox.put_woken(Counter({"e1": 1, "e2": 1}))
    inbox.put_recovered({"e3"})
    first = inbox.take(timeout=0, linger=no_linger)
    assert len(first.jobs) == BATCH_MAX
    assert first.woken == Counter({"e1": 3, "e2": 1})
    assert first.recovered == {"e3"}
    second = inbox.take(timeout=0, linger=no_linger)
    assert [job.delivery_id for job in second.jobs] == [
        f"d{n}" for n in range(BATCH_MAX, BATCH_MAX + 5)
    ]
    assert not second.woken and not second.recovered


def test_stop_wakes_the_thread_once_then_it_waits_again():
    # A stopped engine's admit thread must not spin (it lives on as a daemon).
    inbox = Inbox()
    inbox.stop()
    started = time.monotonic()
    inbox.take(timeout=5, linger=no_linger)
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    inbox.take(timeout=0.3, linger=no_linger)
    assert time.monotonic() - started >= 0.25


def test_a_small_batch_lingers_for_the_next_jobs():
    inbox = Inbox()
    inbox.put_jobs(jobs(1))

    def later() -> None:
        time.sleep(0.05)
        inbox.put_jobs(jobs(2))

    threading.Thread(target=later).start()
    taken = inbox.take(timeout=0, linger=lambda batch: 0.5 if batch < 3 else 0.0)
    assert len(taken.jobs) == 3
