"""Benchmark harness: `make bench`, or `.venv/bin/python -m bench [options]`.

Starts what it needs on 127.0.0.1 (gunicorn, Celery workers as in the Procfile,
receivers), runs each scenario --runs times for about --seconds each, and prints
a table of medians with ratios against ceilings measured in the same invocation.
Private database (webhooks_bench, webhooks_bench_growth), queue prefix `bench.`,
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

from bench import filters as f
from bench import growth as g
from bench import harness as h
from bench import scenarios as sc

SCENARIOS = {
    "ingest": sc.ingest,
    "delivery": sc.delivery,
    "latency": sc.latency,
    "slow": sc.slow,
    "isolation": sc.isolation,
    "filters": f.filters,
    "growth": g.growth,
    "resources": g.resources,
}
# Scenarios measured once whatever --runs says: their figure is cumulative.
ONCE = {"resources"}


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
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.seconds = 1, 3
        args.growth_rows = min(args.growth_rows, 30_000)
        args.resources_deliveries = min(args.resources_deliveries, 9_000)
        args.slow_pools = args.slow_pools.split(",")[0]
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


# (metric, label, unit, ceiling metric or None, target text, check)
ROWS = [
    (
        "ingest_events_per_s",
        "ingest: events accepted",
        "/s",
        "web_ceiling_per_s",
        ">= 0.5 of ceiling and >= 1500/s",
        lambda v, r: r >= 0.5 and v >= 1500,
    ),
    (
        "web_ceiling_per_s",
        "ingest ceiling: trivial authenticated view",
        "/s",
        None,
        "",
        None,
    ),
    (
        "delivery_per_s",
        "delivery: fast receivers",
        "/s",
        "noop_per_s",
        ">= 0.6 of ceiling and >= 800/s",
        lambda v, r: r >= 0.6 and v >= 800,
    ),
    ("noop_per_s", "delivery ceiling: no-op tasks, same workers", "/s", None, "", None),
    (
        "latency_p50_ms",
        "latency at half load, p50",
        "ms",
        None,
        "< 20 ms",
        lambda v, r: v < 20,
    ),
    ("latency_p95_ms", "latency at half load, p95", "ms", None, "", None),
    (
        "latency_p99_ms",
        "latency at half load, p99",
        "ms",
        None,
        "< 100 ms",
        lambda v, r: v < 100,
    ),
    ("latency_rate_per_s", "latency: deliveries paced", "/s", None, "", None),
    (
        "latency_delivered_share",
        "latency: share of the paced deliveries received",
        "",
        None,
        "",
        None,
    ),
    (
        "latency_e2e_max_per_s",
        "end to end: deliveries/s, events posted while delivered",
        "/s",
        None,
        "",
        None,
    ),
    (
        "isolation_beside_known_dead_per_s",
        "isolation: healthy beside a dead endpoint (circuit open)",
        "/s",
        "isolation_alone_per_s",
        ">= 0.9 of alone",
        lambda v, r: r >= 0.9,
    ),
    (
        "isolation_beside_dead_per_s",
        "isolation: healthy beside an endpoint dying (backlog queued)",
        "/s",
        "isolation_alone_per_s",
        ">= 0.9 of alone",
        lambda v, r: r >= 0.9,
    ),
    ("isolation_alone_per_s", "isolation: healthy alone", "/s", None, "", None),
    (
        "isolation_beside_known_dead_cpu_us",
        "isolation: machine CPU per healthy delivery, dead endpoint (circuit open)",
        "µs",
        "isolation_alone_cpu_us",
        "",
        None,
    ),
    (
        "isolation_beside_dead_cpu_us",
        "isolation: machine CPU per healthy delivery, endpoint dying",
        "µs",
        "isolation_alone_cpu_us",
        "",
        None,
    ),
    (
        "isolation_alone_cpu_us",
        "isolation: machine CPU per healthy delivery, alone",
        "µs",
        None,
        "",
        None,
    ),
    (
        "isolation_p50_ms",
        "isolation: healthy latency p50 (dead beside)",
        "ms",
        None,
        "",
        None,
    ),
    (
        "isolation_p99_ms",
        "isolation: healthy latency p99 (dead beside)",
        "ms",
        None,
        "< 1000 ms",
        lambda v, r: v < 1000,
    ),
    (
        "isolation_paced_per_s",
        "isolation: healthy deliveries paced",
        "/s",
        None,
        "",
        None,
    ),
    *f.ROWS,
    (
        "growth_seeded_ingest_per_s",
        "growth: ingest with N rows",
        "/s",
        "growth_empty_ingest_per_s",
        ">= 0.9 of empty",
        lambda v, r: r >= 0.9,
    ),
    (
        "growth_seeded_delivery_per_s",
        "growth: delivery with N rows",
        "/s",
        "growth_empty_delivery_per_s",
        ">= 0.9 of empty",
        lambda v, r: r >= 0.9,
    ),
    (
        "growth_seeded_delivery_cpu_us",
        "growth: machine CPU per delivery with N rows",
        "µs",
        "growth_empty_delivery_cpu_us",
        "",
        None,
    ),
    (
        "web_rss_growth_pct",
        "resources: web RSS growth",
        "%",
        None,
        "<= 10 % (over 1M)",
        lambda v, r: v <= 10,
    ),
    (
        "worker_rss_growth_pct",
        "resources: worker RSS growth",
        "%",
        None,
        "<= 10 % (over 1M)",
        lambda v, r: v <= 10,
    ),
]


def table(results: dict[str, list[float]], args) -> str:
    """The markdown table of medians, ratios and targets."""
    medians = {key: h.median(values) for key, values in results.items()}
    lines = [
        "| measurement | median | runs | ratio | target | met |",
        "| --- | ---: | --- | ---: | --- | --- |",
    ]
    shown = set()
    for key, label, unit, ceiling, target, check in ROWS:
        if key not in medians:
            continue
        shown.add(key)
        value = medians[key]
        ratio = float("nan")
        if medians.get(ceiling):
            ratio = value / medians[ceiling]
        if key.startswith("growth_seeded"):
            label = label.replace("N rows", f"{args.growth_rows:,} rows")
        if ceiling in medians:
            shown.add(ceiling)
        verdict = "" if check is None else ("yes" if check(value, ratio) else "NO")
        if check is not None and value != value:
            verdict = "no data"
        lines.append(
            f"| {label} | {_fmt(value)} {unit} | {_runs(results[key])} | "
            f"{'' if ratio != ratio else f'{ratio:.2f}'} | {target} | {verdict} |"
        )
    for key in sorted(medians):  # everything else measured (slow, resources, ...)
        if key in shown:
            continue
        target, verdict = "", ""
        if key.startswith("slow_") and key.endswith("_per_s"):
            target = ">= 500/s"
            verdict = "yes" if medians[key] >= 500 else "NO"
        lines.append(
            f"| {key} | {_fmt(medians[key])} | {_runs(results[key])} | | "
            f"{target} | {verdict} |"
        )
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if value != value:
        return "nan"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _runs(values: list[float]) -> str:
    return ", ".join(_fmt(value) for value in values)


def _seeded(rows: int) -> bool:
    """Seed the growth database (reused when already seeded); False on failure."""
    for attempt in (1, 2):
        h.wait_for_services()
        try:
            g.seed(rows)
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
        if name == "growth" and not _seeded(args.growth_rows):
            failed.append("growth (seeding)")
            continue
        runs = 1 if name in ONCE else args.runs
        for run in range(1, runs + 1):
            found = _attempt(name, ctx, run)
            if found is None:
                failed.append(f"{name} run {run}")
                continue
            for key, value in found.items():
                results.setdefault(key, []).append(value)
            summary = ", ".join(f"{k} {_fmt(v)}" for k, v in found.items())
            print(f"{name} run {run}: {summary}", flush=True)
        ctx.medians.update({k: h.median(v) for k, v in results.items()})


def main(argv=None) -> int:
    """Run the selected scenarios and print the table; 1 if one failed."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: every process started so far is stopped by pid.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Latency and isolation measure the end-to-end maximum with wrk, unless told
    # the rate to pace at.
    needs_wrk = {"ingest", "filters", "growth", "resources"}
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
        f"; web: gunicorn 2 x 4 threads; load at end {os.getloadavg()[0]:.2f})"
    )
    print()
    print(table(results, args))
    if failed:
        print(f"\nfailed: {', '.join(failed)} (see the traceback above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
