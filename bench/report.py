"""The results table: medians, ratios against a ceiling, and targets."""

from bench import catalog, ordering
from bench import harness as h

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
    *catalog.ROWS,
    *ordering.ROWS,
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
    (
        "batch_events_per_s",
        "batch: events accepted in batches of 100, fan-out 1",
        "/s",
        "batch_single_events_per_s",
        ">= 5x single and >= 2000/s",
        lambda v, r: r >= 5 and v >= 2000,
    ),
    (
        "batch_single_events_per_s",
        "batch baseline: single events, same run",
        "/s",
        None,
        "",
        None,
    ),
    (
        "filters_filtered_per_s",
        "filters: ingest to 100 filtered endpoints",
        "/s",
        "filters_plain_per_s",
        ">= 0.8 of unfiltered",
        lambda v, r: r >= 0.8,
    ),
    ("filters_plain_per_s", "filters: ingest to 100 unfiltered", "/s", None, "", None),
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
        "drop_ingest_during_delete_per_s",
        "drop: ingest while the cleanup deletes a day of attempts",
        "/s",
        "drop_ingest_alone_per_s",
        "",
        None,
    ),
    (
        "drop_ingest_during_drop_per_s",
        "drop: ingest while a week's partition is dropped",
        "/s",
        "drop_ingest_alone_per_s",
        "",
        None,
    ),
    (
        "drop_delete_rows_per_s",
        "drop: attempts the cleanup deletes per second",
        "/s",
        None,
        "",
        None,
    ),
    ("drop_week_ms", "drop: dropping a week's partition", "ms", None, "", None),
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
    medians = {
        key: max(values) if key in ordering.WORST else h.median(values)
        for key, values in results.items()
    }
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
            attempts = max(args.growth_attempts, args.growth_rows)
            label = label.replace(
                "N rows", f"{args.growth_rows:,} deliveries, {attempts:,} attempts"
            )
        if key.startswith("ordering_"):
            label = label.replace("K keys", f"{args.ordering_keys:,} keys")
        if ceiling in medians:
            shown.add(ceiling)
        verdict = "" if check is None else ("yes" if check(value, ratio) else "NO")
        if check is not None and value != value:
            verdict = "no data"
        lines.append(
            f"| {label} | {fmt(value)} {unit} | {_runs(results[key])} | "
            f"{'' if ratio != ratio else f'{ratio:.2f}'} | {target} | {verdict} |"
        )
    for key in sorted(medians):  # everything else measured (slow, resources, ...)
        if key in shown or key.startswith("cost_"):  # cost.stage_table has them
            continue
        target, verdict = "", ""
        if key.startswith("slow_") and key.endswith("_per_s"):
            target = ">= 500/s"
            verdict = "yes" if medians[key] >= 500 else "NO"
        lines.append(
            f"| {key} | {fmt(medians[key])} | {_runs(results[key])} | | "
            f"{target} | {verdict} |"
        )
    return "\n".join(lines)


def fmt(value: float) -> str:
    """A figure as the table shows it."""
    if value != value:
        return "nan"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _runs(values: list[float]) -> str:
    return ", ".join(fmt(value) for value in values)
