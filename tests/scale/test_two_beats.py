"""A second beat started by mistake (issue 31), simulated on 127.0.0.1.

It sends every periodic task a second time, but each row whose lease passed is
still published once per expiry: the twin sweep finds the rows locked (SKIP
LOCKED) or leased again. Every process is started here and stopped by its pid.
"""

import json
import re
import time
import uuid
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus
from tests.conftest import (
    purge_queues,
    queued_deliveries,
    wait_until,
)
from tests.factories import make_endpoint, make_event
from tests.faults.stack import Beat
from tests.scale.conftest import log_time, process_env
from tests.scale.hosts import (
    HostWorker,
    host_samples,
    start_together,
    value,
)
from webhooks_project.queues import DELIVERIES_QUEUE, MAINTENANCE_QUEUE, RETRIES_QUEUE

pytestmark = [
    pytest.mark.scale,
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
]


ROWS_PER_KIND = 50
SETTLE_SECONDS = 6.0
SENDING = "Sending due task enqueue-due-deliveries"
SWEEP_RECEIVED = re.compile(r"Task deliveries\.enqueue_due\[([^\]]+)\] received")
SWEEP_DONE = re.compile(
    r"Task deliveries\.enqueue_due\[([^\]]+)\] succeeded in [^:]+: (\d+)"
)


def sweep_runs(log: str) -> list[tuple[datetime, datetime, int]]:
    """Each sweep the worker ran: received, succeeded, rows it published."""
    received, runs = {}, []
    for line in log.splitlines():
        if found := SWEEP_RECEIVED.search(line):
            received[found[1]] = log_time(line)
        elif (found := SWEEP_DONE.search(line)) and found[1] in received:
            runs.append((received[found[1]], log_time(line), int(found[2])))
    return runs


def leases_pass(kinds: dict[str, list]) -> None:
    """Every row's lease passed 5 s ago, as a lost attempt, a waiting delivery
    or a due retry (the three kinds of rows the sweep publishes)."""
    past = timezone.now() - timedelta(seconds=5)
    Delivery.objects.filter(pk__in=kinds["lost"]).update(
        status=DeliveryStatus.IN_PROGRESS, lease_expires_at=past
    )
    Delivery.objects.filter(pk__in=kinds["waiting"]).update(
        status=DeliveryStatus.PENDING, next_attempt_at=past, lease_expires_at=past
    )
    Delivery.objects.filter(pk__in=kinds["retry"]).update(
        status=DeliveryStatus.FAILED,
        attempt_count=1,
        next_attempt_at=past,
        lease_expires_at=past,
    )


def sweep_round(*, ids: list, worker: HostWorker, beats: list[Beat]) -> dict:
    """Wait until the sweeps published every row, then SETTLE_SECONDS more while
    both beats keep sending sweeps; what was published, per row."""
    worker_mark = worker.log_path.stat().st_size
    beat_marks = [beat.log_path.stat().st_size for beat in beats]
    rows = Delivery.objects.filter(pk__in=ids)
    wait_until(
        lambda: not rows.filter(lease_expires_at__lte=timezone.now()).exists(),
        timeout=30,
    )
    settle_until = time.monotonic() + SETTLE_SECONDS

    def settled() -> bool:
        sent = [
            beat.log_since(mark).count(SENDING.encode())
            for beat, mark in zip(beats, beat_marks, strict=True)
        ]
        return time.monotonic() >= settle_until and min(sent) >= 4

    wait_until(settled, timeout=SETTLE_SECONDS + 20, interval=0.2)
    found = queued_deliveries([DELIVERIES_QUEUE, RETRIES_QUEUE])
    log = worker.log_since(worker_mark).decode(errors="replace")
    runs = sweep_runs(log)
    own = {str(i) for i in ids}
    publishing = [(start, end) for start, end, n in runs if n]
    return {
        "published": {i: found.get(i, 0) for i in own},
        "others_in_queues": sum(n for i, n in found.items() if i not in own),
        "sweeps_sent_by_beat": [
            beat.log_since(mark).count(SENDING.encode())
            for beat, mark in zip(beats, beat_marks, strict=True)
        ],
        "sweep_runs": len(runs),
        "runs_that_published": [n for _, _, n in runs if n],
        "published_by_runs": sum(n for _, _, n in runs),
        # Runs that went on while one was publishing, and found every row
        # locked by it (SKIP LOCKED) or already leased again.
        "overlapping_runs_that_published_nothing": sum(
            1
            for start, end, n in runs
            if not n and any(start < e and s < end for s, e in publishing)
        ),
    }


def test_a_second_beat_does_not_double_the_sweeps_effect(
    tenant, tmp_path, processes, settings
):
    # given: rows whose lease passed, and no message of them anywhere
    settings.WEBHOOK_ENDPOINT_QUEUES = False  # one shared queue to count in
    purge_queues()
    endpoint = make_endpoint(tenant=tenant)  # nobody delivers: nothing consumes
    ids = []
    for n in range(3 * ROWS_PER_KIND):
        _, [row] = make_event(tenant=tenant, payload={"n": n})
        assert row.endpoint_id == endpoint.pk
        ids.append(row.pk)
    kinds = {
        kind: ids[i * ROWS_PER_KIND : (i + 1) * ROWS_PER_KIND]
        for i, kind in enumerate(("lost", "waiting", "retry"))
    }
    queued_deliveries([DELIVERIES_QUEUE, RETRIES_QUEUE])  # what ingestion published
    leases_pass(kinds)
    # A worker for the periodic tasks only, and two beats (one by mistake).
    metrics_dir = tmp_path / "sweeper" / "metrics"
    metrics_dir.mkdir(parents=True)
    env = process_env(
        WEBHOOK_SWEEP_INTERVAL="1",
        WEBHOOK_ENDPOINT_QUEUES="0",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    worker = HostWorker(
        node=f"sweeper-{uuid.uuid4().hex[:6]}@hostM",
        env=env,
        log_dir=tmp_path / "sweeper",
        concurrency=4,
        queues=[MAINTENANCE_QUEUE],
    )
    beats = []
    for name in ("beat1", "beat2"):
        (tmp_path / name).mkdir()
        beats.append(
            Beat(env=process_env(WEBHOOK_SWEEP_INTERVAL="1"), log_dir=tmp_path / name)
        )
    processes.extend([worker, *beats])
    started = time.monotonic()
    start_together([worker, *beats])

    # when: both beats send the sweep every second, over two expiries of the leases
    rounds = [sweep_round(ids=ids, worker=worker, beats=beats)]
    recovered = [value(host_samples(metrics_dir), "webhook_deliveries_recovered_total")]
    leases_pass(kinds)
    rounds.append(sweep_round(ids=ids, worker=worker, beats=beats))
    recovered.append(
        value(host_samples(metrics_dir), "webhook_deliveries_recovered_total")
    )
    elapsed = time.monotonic() - started

    summary = [
        {key: value_ for key, value_ in r.items() if key != "published"} for r in rounds
    ]
    print(
        "\nsecond beat:",
        json.dumps({"rounds": summary, "recovered": recovered, "s": round(elapsed, 1)}),
    )
    # then: each row was published once per expiry of its lease, though every
    # sweep was sent twice as often
    for round_ in rounds:
        twice = {i: n for i, n in round_["published"].items() if n != 1}
        assert twice == {}, round_
        assert round_["published_by_runs"] == len(ids), round_
        assert min(round_["sweeps_sent_by_beat"]) >= 4, round_
    # lost attempts were counted as recovered once per expiry, not per sweep
    assert recovered == [ROWS_PER_KIND, 2 * ROWS_PER_KIND]
    # and every row now waits on the lease its one publication gave it
    soon = timezone.now() + timedelta(seconds=60)
    assert not Delivery.objects.filter(pk__in=ids, lease_expires_at__lte=soon).exists()
