"""Workers on several hosts (issue 31), simulated on 127.0.0.1.

1. Three workers with host names of their own (`worker1@hostA`, ...), each with
   its own metrics directory and WEBHOOK_WORKER_METRICS_PORT, consume the same
   queues. Events published through the API go to an endpoint with
   `max_in_flight: 5` whose receiver answers in 1 s. hostA is SIGKILLed mid-run;
   hostC is cut off from Redis from its start (its REDIS_URL names a local port
   that accepts connections and never answers): it sends nothing and postpones
   what it claims ("unmetered") until the partition heals, when everything
   published so far is delivered; then 50 more events, which hostC helps with.
   Nothing accepted is lost; the requests in flight at the receiver are
   measured, in all, per host, and for the hosts sharing Redis.
A second beat started by mistake: tests/scale/test_two_beats.py.

Every process is started here and stopped by its pid (tests/scale/hosts.py).
"""

import base64
import itertools
import json
import secrets
import signal
import statistics
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus
from tests.conftest import (
    purge_queues,
    wait_until,
)
from tests.faults.stack import Beat, free_port
from tests.scale.conftest import log_times, process_env
from tests.scale.hosts import (
    HostReceiver,
    HostWorker,
    RedisPartition,
    host_samples,
    scraped_samples,
    start_together,
    stop_all,
    value,
)

pytestmark = [
    pytest.mark.scale,
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
]

CAP = 5
# Slow, so that the cap, not the machine, sets the pace: the hosts sharing
# Redis stay at it while the backlog lasts.
RECEIVER_DELAY = 1.0
EVENTS = 200  # in two halves, hostA killed between them
EVENTS_AFTER_HEAL = 50  # every host reaches Redis again
# Short request deadlines; the lease margin keeps the in-progress lease (34 s)
# well above what a worker without Redis takes from claim to record (a few
# Redis calls of 4 s each: 4 tries of redis-py's with a 1 s socket timeout).
TIMEOUTS = {
    "WEBHOOK_CONNECT_TIMEOUT": "1",
    "WEBHOOK_RESPONSE_TIMEOUT": "3",
    "WEBHOOK_PROGRESS_LEASE_MARGIN": "30",
    "WEBHOOK_SWEEP_INTERVAL": "1",
}
# How long a killed worker's in-flight slots stay taken: connect + response
# deadline + lease margin (deliveries/flow/gate.py `_slot_ms`).
SLOT_SECONDS = 34.0
# hostC stays cut off until the first EVENTS are delivered, at most
# PARTITION_MAX seconds after the start (hostA's slots alone stay taken for
# SLOT_SECONDS after its kill).
PARTITION_MAX = 120.0
# The phase after the heal starts this much later (hostC's Redis calls that
# were under way when it healed end first).
HEALING_SECONDS = 3.0
DRAIN_TIMEOUT = 60.0
UNMETERED_LINE = "deliveries postponed, Redis unavailable"
UNREADABLE_LINE = "endpoint queues: announcements unreadable"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def publish(api, n: int) -> dict:
    body = {"event_type": "order.created", "payload": {"n": n}}
    response = api.post(
        "/api/v1/events", json.dumps(body), content_type="application/json"
    )
    assert response.status_code in (200, 202), response.content
    return response.json()


def test_three_hosts_one_killed_one_cut_off_from_redis_lose_nothing(
    api, tmp_path, processes
):
    started_at = time.monotonic()
    purge_queues()
    secret = new_secret()
    redis_url = urlsplit(django_settings.REDIS_URL)
    assert redis_url.hostname in ("127.0.0.1", "localhost"), "Redis not local"
    names = {"hostA": "worker1", "hostB": "worker2", "hostC": "worker3"}
    tag = uuid.uuid4().hex[:6]
    workers: dict[str, HostWorker] = {}
    worker_pids: dict[str, int] = {}
    with (
        RedisPartition(upstream=(redis_url.hostname, redis_url.port or 6379)) as cut,
        HostReceiver(
            delay=RECEIVER_DELAY,
            secrets=[secret],
            pids=lambda: dict(worker_pids),
            groups={"sharing_redis": {"hostA", "hostB"}},
        ) as receiver,
    ):
        created = api.post(
            "/api/v1/endpoints",
            {"url": receiver.url, "max_in_flight": CAP, "secret": secret},
            format="json",
        )
        assert created.status_code == 201, created.content
        assert created.json()["max_in_flight"] == CAP
        metrics_dirs, metrics_ports = {}, {}
        for host, name in names.items():
            metrics_dirs[host] = tmp_path / host / "metrics"
            metrics_dirs[host].mkdir(parents=True)
            metrics_ports[host] = free_port()
            env = process_env(
                **TIMEOUTS,
                PROMETHEUS_MULTIPROC_DIR=str(metrics_dirs[host]),
                WEBHOOK_WORKER_METRICS_PORT=str(metrics_ports[host]),
            )
            if host == "hostC":  # cut off from Redis from its start
                env["REDIS_URL"] = f"redis://127.0.0.1:{cut.port}{redis_url.path}"
            workers[host] = HostWorker(
                node=f"{name}-{tag}@{host}", env=env, log_dir=tmp_path / host
            )
        beat_dir = tmp_path / "beat"
        beat_dir.mkdir()
        beat = Beat(env=process_env(**TIMEOUTS), log_dir=beat_dir)
        processes.extend([*workers.values(), beat])
        start_together([*workers.values(), beat])
        worker_pids.update({host: w.pid for host, w in workers.items()})
        ready_at = time.monotonic()

        # when: the first half is published, hostA delivers, then dies mid-run
        accepted = [publish(api, n) for n in range(EVENTS // 2)]
        wait_until(lambda: receiver.requests_by_host["hostA"] >= 10, timeout=60)
        wait_until(lambda: receiver.in_flight_by_host["hostA"] > 0, timeout=10)
        in_flight_at_kill = receiver.in_flight_by_host["hostA"]
        workers["hostA"].signal(signal.SIGKILL)
        assert workers["hostA"].wait(10)
        killed_at, killed_wall = time.monotonic(), time.time()
        accepted += [publish(api, n) for n in range(EVENTS // 2, EVENTS)]
        published_at = time.monotonic()

        def open_rows() -> int:
            ids = [event["id"] for event in accepted]
            found = Delivery.objects.filter(event_id__in=ids)
            return found.exclude(status=DeliveryStatus.SUCCEEDED).count()

        # hostC stays cut off until the others delivered all of it.
        until = started_at + PARTITION_MAX
        while (open_at_heal := open_rows()) and time.monotonic() < until:
            time.sleep(0.5)
        while_cut = receiver.maxima(reset=True)
        c_requests_while_cut = receiver.requests_by_host["hostC"]
        healed_wall = timezone.now()
        healed_at = time.monotonic()
        cut.heal()
        time.sleep(HEALING_SECONDS)
        healing = receiver.maxima(reset=True)
        # more events, now that every host reaches Redis again
        accepted += [publish(api, n) for n in range(EVENTS, EVENTS + EVENTS_AFTER_HEAL)]

        # then: every accepted delivery succeeds
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while open_rows() and time.monotonic() < deadline:
            time.sleep(0.5)
        drained_at = time.monotonic()
        healed = receiver.maxima()
        event_ids = [event["id"] for event in accepted]
        assert all(event["deliveries"] == 1 for event in accepted), accepted[0]
        rows = Delivery.objects.filter(event_id__in=event_ids)
        statuses = Counter(rows.values_list("status", flat=True))
        latencies = [
            (done - created).total_seconds()
            for done, created in rows.filter(succeeded_at__isnull=False).values_list(
                "succeeded_at", "created_at"
            )
        ]
        delivered_after_heal = rows.filter(succeeded_at__gte=healed_wall).count()
        with receiver._cond:
            received = list(receiver.received)
            by_host = dict(receiver.requests_by_host)
            arrivals = list(receiver.arrivals)
        # What each host's metrics say (hostA's from its files: it is gone),
        # then every process stopped.
        samples = {host: host_samples(path) for host, path in metrics_dirs.items()}
        served = {h: scraped_samples(metrics_ports[h]) for h in ("hostB", "hostC")}
        stops = stop_all(processes, timeout=20)

    c_log = workers["hostC"].log_path.read_text(errors="replace")
    unreadable = log_times(c_log, UNREADABLE_LINE)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(unreadable)]
    ok = [r for r in received if 200 <= r.status < 300]
    ok_ids = Counter(r.header("webhook-id") for r in ok)

    def sharing_rate(start: float, end: float) -> float:
        """Requests/s of the hosts sharing Redis from `start` to `end` (epoch)."""
        n = sum(
            1
            for at, host in arrivals
            if host in ("hostA", "hostB") and start <= at < end
        )
        return round(n / max(end - start, 0.1), 1)

    first = min(at for at, _ in arrivals)
    expired = killed_wall + SLOT_SECONDS

    sharing = max(
        phase["by_group"].get("sharing_redis", 0)
        for phase in (while_cut, healing, healed)
    )
    summary = {
        "events": len(event_ids),
        "statuses": dict(statuses),
        "lost": len(event_ids) - statuses.get(DeliveryStatus.SUCCEEDED, 0),
        "requests": len(received),
        "requests_2xx": len(ok),
        "duplicates": sum(n - 1 for n in ok_ids.values()),
        "duplicated_ids": sorted(i for i, n in ok_ids.items() if n > 1),
        "max_in_flight_while_cut": while_cut,
        "max_in_flight_healing": healing,
        "max_in_flight_after_heal": healed,
        "max_in_flight_hosts_sharing_redis": sharing,
        "requests_by_host": by_host,
        "hostC_requests_while_cut": c_requests_while_cut,
        "hostC_requests_after_heal": by_host.get("hostC", 0) - c_requests_while_cut,
        "sharing_redis_requests_per_s": {
            "before_kill": sharing_rate(first, killed_wall),
            "while_killed_slots_held": sharing_rate(killed_wall, expired),
            "10s_after_they_expired": sharing_rate(expired, expired + 10),
        },
        "hostA_in_flight_at_kill": in_flight_at_kill,
        "open_rows_at_heal": open_at_heal,
        "delivered_after_heal": delivered_after_heal,
        "max_latency_s": round(max(latencies, default=0), 1),
        "attempts_by_host": {
            h: value(s, "webhook_delivery_attempts_total") for h, s in samples.items()
        },
        "succeeded_by_host": {
            h: value(s, "webhook_deliveries_succeeded_total")
            for h, s in samples.items()
        },
        "recovered_by_host": {
            h: value(s, "webhook_deliveries_recovered_total")
            for h, s in samples.items()
        },
        "hostC_unmetered_lines": c_log.count(UNMETERED_LINE),
        "postponed_unmetered_by_host": {
            h: value(s, "webhook_deliveries_postponed_total", reason="unmetered")
            for h, s in samples.items()
        },
        "hostC_redis_call_s": round(statistics.median(gaps), 1) if gaps else None,
        "partition": {
            "connections_while_cut": cut.accepted_while_cut,
            "forwarded_after_heal": cut.forwarded,
        },
        "seconds": {
            "start": round(ready_at - started_at, 1),
            "kill_after_ready": round(killed_at - ready_at, 1),
            "heal_after_ready": round(healed_at - ready_at, 1),
            "drain_after_publish": round(drained_at - published_at, 1),
            "stop_after_sigterm": stops,
            "all": round(time.monotonic() - started_at, 1),
        },
    }
    print("\nseveral hosts:", json.dumps(summary, indent=1, default=str))

    # Nothing accepted was lost: every delivery succeeded, and the receiver
    # answered 2xx, with a valid signature, to each event's webhook-id.
    assert summary["lost"] == 0, summary
    assert set(event_ids) <= set(ok_ids), set(event_ids) - set(ok_ids)
    assert all(r.verified for r in received)
    # Each worker served its own host's metrics on its own port.
    for host in ("hostB", "hostC"):
        name = "webhook_deliveries_succeeded_total"
        assert value(served[host], name) == value(samples[host], name), host
    # The hosts that reach Redis keep the cap together, all along; and once
    # the partition healed, every host does (hostC with them).
    assert sharing <= CAP, summary
    assert healed["all"] <= CAP, summary
    # The endpoint's cap, across every host, while hostC was cut off: hostC,
    # which cannot count the others' requests, sent none and postponed what it
    # claimed; it delivers again once it reaches Redis.
    assert while_cut["all"] <= CAP, summary
    assert c_requests_while_cut == 0, summary
    assert summary["postponed_unmetered_by_host"]["hostC"] > 0, summary
    assert summary["hostC_requests_after_heal"] > 0, summary


# Rows of each kind the sweep publishes when their lease passed.
