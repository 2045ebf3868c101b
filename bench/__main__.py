"""Benchmark harness: `make bench`, or `.venv/bin/python -m bench [options]`.

Starts what it needs on 127.0.0.1 (gunicorn, Celery workers as in the Procfile,
receivers), runs each scenario --runs times for about --seconds each, and prints
a table of medians with ratios against ceilings measured in the same invocation.
Private databases (webhooks_bench, _growth, _retention), queue prefix `bench.`,
Redis database 8. See BENCHMARKS.md for the figures and what they mean.
"""

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import batch as b
from bench import catalog as cat
from bench import cost as c
from bench import drop as d
from bench import filters as f
from bench import growth as g
from bench import harness as h
from bench import ordering as o
from bench import retention as r
from bench import scenarios as sc
from bench.report import fmt, table

SCENARIOS = {
    "ingest": sc.ingest,
    "delivery": sc.delivery,
    "latency": sc.latency,
    "slow": sc.slow,
    "isolation": sc.isolation,
    "batch": b.batch,
    "filters": f.filters,
    "growth": g.growth,
    "drop": d.drop,
    "resources": g.resources,
    "retention": r.retention,
    "catalog": cat.catalog,
    "cost": c.cost,
    "ordering": o.ordering,
}
# Scenarios measured once whatever --runs says: their figure is cumulative (or,
# for retention and drop, seeding takes most of the time).
ONCE = {"resources", "retention", "drop"}
# Scenarios on the seeded growth database.
GROWN = {"growth", "drop"}


def parse_args(argv=None) -> argparse.Namespace:
    """Options; --quick shrinks everything for a smoke run."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, from: " + ", ".join(SCENARIOS),
    )
    p.add_argument("--runs", type=int, default=3, help="repetitions (medians)")
    p.add_argument(
        "--seconds",
        type=float,
        default=15,
        help="approximate length of one measurement",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 run, 3 s, tiny growth and resources",
    )
    p.add_argument("--pool", default="threads", help="worker pool (Procfile)")
    p.add_argument("--concurrency", type=int, default=32, help="threads (Procfile)")
    p.add_argument(
        "--processes",
        type=int,
        default=2,
        help="worker processes (one per core, as the README recommends)",
    )
    p.add_argument(
        "--web-threads", type=int, default=4, help="gunicorn threads (Procfile)"
    )
    p.add_argument(
        "--slow-pools",
        default="1x128,1x256,2x128",
        help="PROCESSESxTHREADS variants for the 200 ms receivers",
    )
    p.add_argument("--slow-endpoints", type=int, default=16)
    p.add_argument(
        "--slow-max-in-flight",
        type=int,
        default=None,
        help="the 200 ms endpoints' own in-flight cap (default: the server's, 20)",
    )
    p.add_argument(
        "--slow-rate-guess",
        type=float,
        default=600,
        help="sizes the 200 ms receivers' backlog (deliveries/s)",
    )
    p.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="deliveries/s for the latency runs (default: half the end-to-end max)",
    )
    p.add_argument("--growth-rows", type=int, default=10_000_000)
    p.add_argument(
        "--growth-attempts",
        type=int,
        default=0,
        help="attempt rows of the growth database (default: one a delivery)",
    )
    p.add_argument("--retention-rows", type=int, default=10_000_000)
    p.add_argument("--resources-deliveries", type=int, default=100_000)
    p.add_argument("--resources-timeout", type=float, default=900)
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--wrk-connections", type=int, default=32)
    p.add_argument(
        "--noop-rate-guess",
        type=float,
        default=2500,
        help="sizes the no-op backlog (tasks per --seconds)",
    )
    p.add_argument(
        "--delivery-rate-guess",
        type=float,
        default=1000,
        help="sizes the delivery backlogs",
    )
    p.add_argument(
        "--ordering-keys",
        type=int,
        default=1000,
        help="ordering: keys of the keyed backlog (round robin)",
    )
    p.add_argument(
        "--ordering-hot-events",
        type=int,
        default=400,
        help="ordering: events of the one hot key",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.seconds = 1, 3
        args.growth_rows = min(args.growth_rows, 30_000)
        args.growth_attempts = min(args.growth_attempts, 90_000)
        args.retention_rows = min(args.retention_rows, 21_000)
        args.resources_deliveries = min(args.resources_deliveries, 9_000)
        args.slow_pools = args.slow_pools.split(",")[0]
        args.ordering_hot_events = min(args.ordering_hot_events, 100)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def machine() -> str:
    """One line about the machine and the services' versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in cpuinfo if "model name" in x), "?")
    mem = next(int(x.split()[1]) for x in meminfo if x.startswith("MemTotal")) / 2**20
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python "
        f"{platform.python_version()}, load average {load[0]:.2f} "
        f"{load[1]:.2f} {load[2]:.2f} at start"
    )


def _seeded(rows: int, attempts: int) -> bool:
    """Seed the growth database (reused when already seeded); False on failure."""
    for attempt in (1, 2):
        h.wait_for_services()
        try:
            g.seed(rows, attempts)
            return True
        except (Exception, subprocess.SubprocessError):  # noqa: BLE001 (retried once)
            traceback.print_exc()
            print(f"seeding failed (attempt {attempt})", flush=True)
    return False


def _attempt(name: str, ctx, run: int) -> dict | None:
    """One run of a scenario; once more if it failed (a service restarted?)."""
    from django.db import connections

    for attempt in (1, 2):
        h.wait_for_services()
        connections.close_all()  # a restarted PostgreSQL broke the old one
        try:
            return SCENARIOS[name](ctx)
        except (Exception, subprocess.SubprocessError):  # noqa: BLE001 (retried once)
            traceback.print_exc()
            print(f"{name} run {run}: failed (attempt {attempt})", flush=True)
            if attempt == 1:
                time.sleep(20)
    return None


def _run_all(args, ctx, results: dict, failed: list) -> None:
    """Every selected scenario, --runs times (scenario by scenario)."""
    for name in args.scenarios.split(","):
        if name in GROWN and not _seeded(args.growth_rows, args.growth_attempts):
            failed.append(f"{name} (seeding)")
            continue
        runs = 1 if name in ONCE else args.runs
        for run in range(1, runs + 1):
            found = _attempt(name, ctx, run)
            if found is None:
                failed.append(f"{name} run {run}")
                continue
            for key, value in found.items():
                results.setdefault(key, []).append(value)
            summary = ", ".join(f"{k} {fmt(v)}" for k, v in found.items())
            print(f"{name} run {run}: {summary}", flush=True)
        ctx.medians.update({k: h.median(v) for k, v in results.items()})


def main(argv=None) -> int:
    """Run the selected scenarios and print the table; 1 if one failed."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: every process started so far is stopped by pid.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Latency and isolation measure the end-to-end maximum with wrk, unless told
    # the rate to pace at.
    needs_wrk = {
        "ingest",
        "batch",
        "catalog",
        "filters",
        "growth",
        "drop",
        "resources",
        "retention",
        "cost",
    }
    if args.latency_rate is None:
        needs_wrk |= {"latency", "isolation"}
    if shutil.which("wrk") is None and needs_wrk & set(args.scenarios.split(",")):
        print("wrk is required (apt-get install -y wrk)", file=sys.stderr)
        return 2
    print(machine(), flush=True)
    h.setup_django()
    metrics_dir = tempfile.mkdtemp(prefix="webhooks-bench-metrics-")
    ctx = sc.Context(args=args, metrics_dir=metrics_dir)
    results: dict[str, list[float]] = {}
    failed = []
    started = time.monotonic()
    try:
        _run_all(args, ctx, results, failed)
    except (KeyboardInterrupt, SystemExit):  # stopped: still show what was measured
        failed.append("interrupted")
    from django.conf import settings

    prefetch = settings.CELERY_WORKER_PREFETCH_MULTIPLIER
    print()
    print(
        f"python -m bench {' '.join(sys.argv[1:] if argv is None else argv)}"
        f" ({time.monotonic() - started:.0f} s; worker: {args.processes} x "
        f"{args.pool} {args.concurrency}, prefetch x{prefetch}"
        f"; web: gunicorn 2 x {args.web_threads} threads"
        f"; load at end {os.getloadavg()[0]:.2f})"
    )
    print()
    print(table(results, args))
    if any(key.startswith("cost_") for key in results):
        print()
        print(c.stage_table(results))
    if failed:
        print(f"\nfailed: {', '.join(failed)} (see the traceback above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
