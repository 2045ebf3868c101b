"""Batch publishing: events accepted/s through batches vs one by one, same run.

Both through wrk against gunicorn, fan-out to one endpoint, no worker running
(the deliveries wait in the queue): the batch path's figure counts events, not
requests. Issue 29's targets: >= 2,000 events/s, and >= 5x the single path.
"""

import http.client
import json
import uuid

from bench import harness as h
from bench import load
from bench.scenarios import Context, balanced_wrk

BATCH_SIZE = 100
EVENT_TYPE = "bench.event"


def batch(ctx: Context) -> dict:
    """Events accepted/s in batches of BATCH_SIZE, and one by one."""
    args = ctx.args
    ctx.reset()
    world = h.World()
    world.add_receivers(1, event_type=EVENT_TYPE)
    world.stop()  # no worker runs: the deliveries only wait in the queue
    with ctx.web() as web:
        common = {
            "url": web.url,
            "key": world.key,
            "event_type": EVENT_TYPE,
            "threads": args.wrk_threads,
            "connections": args.wrk_connections,
        }
        load.wrk(path="/api/v1/events", seconds=2, **common)  # warm-up
        single = balanced_wrk(
            web, path="/api/v1/events", seconds=args.seconds, **common
        )
        _check_batch(web.url, world.key)
        batches = balanced_wrk(
            web,
            path="/api/v1/events/batch",
            seconds=args.seconds,
            script="batch.lua",
            script_args=(str(BATCH_SIZE),),
            **common,
        )
        web.check()
    for name, result in (("events", single), ("batches", batches)):
        if result["good"] < result["requests"]:
            bad = result["requests"] - result["good"]
            print(f"    ! {bad} non-2xx answers to {name}")
    events = batches["rate"] * BATCH_SIZE
    print(
        f"    batch: {events:.0f} events/s in batches of {BATCH_SIZE}, single "
        f"{single['rate']:.0f} events/s: {events / single['rate']:.1f}x",
        flush=True,
    )
    return {"batch_events_per_s": events, "batch_single_events_per_s": single["rate"]}


def _check_batch(url: str, key: str) -> None:
    """One batch first: wrk counts a 3xx as a success, this does not."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    prefix = uuid.uuid4().hex
    items = [
        {"event_type": EVENT_TYPE, "event_id": f"{prefix}-{n}", "payload": {"n": n}}
        for n in range(BATCH_SIZE)
    ]
    conn.request(
        "POST",
        "/api/v1/events/batch",
        json.dumps({"events": items}),
        {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    text = response.read()[:500]
    conn.close()
    if response.status != 202:
        raise RuntimeError(
            f"POST /api/v1/events/batch answered {response.status}: {text!r}"
        )
