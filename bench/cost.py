"""Where an event's cost goes: CPU per request by process group, from /proc.

Four stages, each measured with wrk for --seconds on the same stack:
`view`, the trivial authenticated view (the web stack's floor); `event`,
`POST /api/v1/events` with a fan-out of 3 and no worker running (ingest alone);
`batch`, the same events in batches of 100 through `POST /api/v1/events/batch`
(per event); `e2e`, the same events posted while the workers deliver them,
counted from the first request until the last delivery arrived (what the whole
system spends on one event, its three deliveries included). Each figure is
microseconds of CPU per request (per event for `event`, `batch` and `e2e`);
`machine` is the busy time of /proc/stat, the sum of the groups plus what no
group names.
"""

from bench import harness as h
from bench import load
from bench.batch import BATCH_SIZE
from bench.cpu import GROUPS, Snapshot, per_item
from bench.scenarios import FAN_OUT, Context, wait_workers_ready

STAGES = ("view", "event", "batch", "e2e")
EVENT_TYPE = "bench.event"


def cost(ctx: Context) -> dict:
    """CPU per request of each stage, by group; and the end-to-end rate."""
    args = ctx.args
    found = {}
    ctx.reset()
    world = h.World()
    world.add_receivers(FAN_OUT, event_type=EVENT_TYPE)
    try:
        with ctx.web() as web:
            common = {
                "url": web.url,
                "key": world.key,
                "event_type": EVENT_TYPE,
                "seconds": args.seconds,
                "threads": args.wrk_threads,
                "connections": args.wrk_connections,
            }
            load.wrk(**(common | {"path": "/bench/noop", "seconds": 2}))  # warm-up
            for stage, path in (("view", "/bench/noop"), ("event", "/api/v1/events")):
                before = Snapshot.take()
                result = load.wrk(path=path, **common)
                spent = Snapshot.take().since(before)
                found |= _figures(stage, spent, result["good"])
                found[f"cost_{stage}_per_s"] = result["rate"]
            before = Snapshot.take()
            result = load.wrk(
                path="/api/v1/events/batch",
                script="batch.lua",
                script_args=(str(BATCH_SIZE),),
                **common,
            )
            spent = Snapshot.take().since(before)
            found |= _figures("batch", spent, result["good"] * BATCH_SIZE)
            found["cost_batch_per_s"] = result["rate"] * BATCH_SIZE
            web.check()
        h.reset_state()
        found |= _end_to_end(ctx, common)
    finally:
        world.stop()
    print(stage_table({key: [value] for key, value in found.items()}), flush=True)
    return found


def _end_to_end(ctx: Context, common: dict) -> dict:
    world = h.World()
    world.add_receivers(FAN_OUT, event_type="ok.event")
    try:
        with ctx.web() as web, ctx.workers() as workers:
            wait_workers_ready(workers)
            before = Snapshot.take()
            started = before.at
            here = {"url": web.url, "key": world.key, "event_type": "ok.event"}
            events = load.wrk(**(common | here), path="/api/v1/events")
            # wrk's requests and the one it posts first to check the answer.
            expected = (events["good"] + 1) * FAN_OUT
            times = h.wait_drained(
                world, "ok.event", expected, timeout=ctx.args.seconds * 4 + 30
            )
            spent = Snapshot.take().since(before)
            web.check()
    finally:
        world.stop()
    if len(times) < expected:
        print(f"    ! only {len(times)}/{expected} delivered")
    rate = len(times) / (times[-1] - started) if times else float("nan")
    return _figures("e2e", spent, expected // FAN_OUT) | {"cost_e2e_per_s": rate}


def _figures(stage: str, spent: dict[str, float], count: int) -> dict:
    return {
        f"cost_{stage}_{group}_us": value
        for group, value in per_item(spent, count).items()
    }


def stage_table(results: dict[str, list[float]]) -> str:
    """Medians as a markdown table: a row per group, a column per stage."""
    medians = {key: h.median(values) for key, values in results.items()}
    stages = [s for s in STAGES if f"cost_{s}_machine_us" in medians]
    lines = [
        "| CPU per request, µs | " + " | ".join(stages) + " |",
        "| --- |" + " ---: |" * len(stages),
    ]
    for group in (*GROUPS, "machine"):
        cells = [medians.get(f"cost_{s}_{group}_us", float("nan")) for s in stages]
        if all(value < 5 for value in cells):
            continue  # a group that takes no part
        lines.append(f"| {group} | " + " | ".join(f"{v:,.0f}" for v in cells) + " |")
    rates = [medians.get(f"cost_{s}_per_s", float("nan")) for s in stages]
    lines.append(
        "| rate (requests/s; batch: events/s; e2e: deliveries/s) | "
        + " | ".join(f"{v:,.0f}" for v in rates)
        + " |"
    )
    return "\n".join(lines)
