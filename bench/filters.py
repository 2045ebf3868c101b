"""Ingest with payload filters: 100 filtered endpoints against 100 without.

Both sets belong to one tenant, each subscribed to its own event type, and wrk
posts events of one type, then the other, in one run (plain, filtered, filtered,
plain: the machine's speed drifts between minutes). Every filter passes the
events wrk posts (bench/wrk/post.lua), so both sides write and publish the same
100 deliveries per event and the difference is the filters' evaluation alone:
the worst case, as a selective filter writes fewer deliveries. No worker runs.
"""

from bench import harness as h
from bench.alternated_ingest import alternated_rates
from bench.scenarios import Context

ENDPOINTS = 100
PLAIN, FILTERED = "bench.plain", "bench.filtered"


def endpoint_filter(number: int) -> dict:
    """A filter of the shape users write, each endpoint's a little different,
    that the events of post.lua pass."""
    return {
        "customer.email": {"$exists": True},
        "items.sku": {"$in": ["SKU-1", f"SKU-{number + 2}"]},
        "items.qty": {"$gte": 1, "$lte": 10 + number},
        "total": {"$neq": "0.00"},
        "$or": [{"thread": {"$gte": 0}}, {"customer.vip": True}],
    }


def filters(ctx: Context) -> dict:
    """Events accepted/s fanning out to 100 filtered and to 100 plain endpoints."""
    from subscriptions.services import endpoint_create

    args = ctx.args
    ctx.reset()
    world = h.World()
    for number in range(ENDPOINTS):
        for event_type, filter_value in (
            (PLAIN, None),
            (FILTERED, endpoint_filter(number)),
        ):
            endpoint_create(
                tenant=world.tenant,
                url=f"http://127.0.0.1:9/{event_type}/{number}",
                event_types=[event_type],
                filter=filter_value,
            )
    half = max(1, round(args.seconds / 2))  # wrk takes whole seconds
    try:
        with ctx.web() as web:
            rates = alternated_rates(
                web,
                key=world.key,
                args=args,
                order=[PLAIN, FILTERED, FILTERED, PLAIN],
                seconds=half,
            )
    finally:
        world.stop()
    plain, filtered = (sum(rates[t]) / len(rates[t]) for t in (PLAIN, FILTERED))
    print(
        f"    filters: {filtered:,.0f} events/s to {ENDPOINTS} filtered endpoints, "
        f"{plain:,.0f}/s to {ENDPOINTS} without: ratio {filtered / plain:.2f}",
        flush=True,
    )
    return {"filters_filtered_per_s": filtered, "filters_plain_per_s": plain}
