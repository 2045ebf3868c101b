"""Per-key ordering: what keyed deliveries cost, and one hot key's pace.

Three drains in one run, each a backlog queued before the workers start (as the
delivery scenario's), to receivers on 127.0.0.1 that answer at once:

1. unkeyed: the delivery scenario's backlog (FAN_OUT endpoints), the same-run
   baseline, deliveries/s between the 5th and 95th percentile of arrivals;
2. keyed: the same backlog, event i with key i mod --ordering-keys (1,000):
   deliveries/s, and the ratio keyed / unkeyed (issue 30's target: >= 0.5);
3. hot key: --ordering-hot-events events, all with one key, to one endpoint.
   They go one at a time, so the receiver sees the platform's overhead per
   event: the gap between one request's end (the receiver answers in the same
   callback that notes its arrival, microseconds later) and the next one's
   arrival, p50 and p99 (target: p50 < 20 ms).

The keyed drains also check at the receivers that each line (endpoint, key) got
its events in acceptance order: a first arrival of an event accepted before one
that already arrived is a violation (printed; the table's figure is the worst
run's). A second arrival of an event is a duplicate, counted apart.
"""

import itertools

from bench import harness as h
from bench import scenarios as sc
from bench.scenarios import FAN_OUT, Context

SHOWN = 10  # violations printed per drain
# Rows of the summary table (bench/report.py ROWS).
ROWS = [
    (
        "ordering_keyed_per_s",
        "ordering: deliveries with K keys",
        "/s",
        "ordering_unkeyed_per_s",
        ">= 0.5 of unkeyed",
        lambda v, r: r >= 0.5,
    ),
    (
        "ordering_unkeyed_per_s",
        "ordering baseline: same backlog without keys, same run",
        "/s",
        None,
        "",
        None,
    ),
    (
        "ordering_keyed_cpu_us",
        "ordering: machine CPU per delivery with K keys",
        "µs",
        "ordering_unkeyed_cpu_us",
        "",
        None,
    ),
    (
        "ordering_unkeyed_cpu_us",
        "ordering: machine CPU per delivery without keys",
        "µs",
        None,
        "",
        None,
    ),
    (
        "ordering_hot_gap_p50_ms",
        "ordering: one hot key, end of a request to the next, p50",
        "ms",
        None,
        "< 20 ms",
        lambda v, r: v < 20,
    ),
    (
        "ordering_hot_gap_p99_ms",
        "ordering: one hot key, end of a request to the next, p99",
        "ms",
        None,
        "",
        None,
    ),
    (
        "ordering_hot_per_s",
        "ordering: one hot key, deliveries",
        "/s",
        None,
        "",
        None,
    ),
    (
        "ordering_keyed_violations",
        "ordering: order violations with K keys (worst run)",
        "",
        None,
        "0",
        lambda v, r: v == 0,
    ),
    (
        "ordering_hot_violations",
        "ordering: order violations, one hot key (worst run)",
        "",
        None,
        "0",
        lambda v, r: v == 0,
    ),
]
# Figures the table shows as their worst run instead of the median.
WORST = {"ordering_keyed_violations", "ordering_hot_violations"}


def ordering(ctx: Context) -> dict:
    """Unkeyed and keyed drains of one backlog size, then one hot key."""
    args = ctx.args
    events = ctx.drain_events()
    unkeyed = sc.drain(ctx, healthy=FAN_OUT, dead=False, events=events)
    keyed = sc.drain(
        ctx, healthy=FAN_OUT, dead=False, events=events, keys=args.ordering_keys
    )
    keyed_check = order_check(keyed.world, "keyed")
    hot = sc.drain(ctx, healthy=1, dead=False, events=args.ordering_hot_events, keys=1)
    hot_check = order_check(hot.world, "hot key")
    [receiver] = hot.world.receivers
    arrivals = [arrival.received_at for arrival in receiver.received]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    p50, p99 = (h.percentile(gaps, pct) * 1000 for pct in (50, 99))
    print(
        f"    ordering: unkeyed {unkeyed.rate:,.0f}/s ({unkeyed.cpu_us:,.0f} µs), "
        f"{args.ordering_keys:,} keys {keyed.rate:,.0f}/s ({keyed.cpu_us:,.0f} µs): "
        f"ratio {keyed.rate / unkeyed.rate:.2f}; one hot key: "
        f"{len(arrivals)}/{args.ordering_hot_events} in order "
        f"{hot_check['in_order']}, gap p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"{hot.rate:.1f}/s; violations {keyed_check['violations']} keyed, "
        f"{hot_check['violations']} hot; duplicates {keyed_check['duplicates']} "
        f"keyed, {hot_check['duplicates']} hot",
        flush=True,
    )
    return {
        "ordering_unkeyed_per_s": unkeyed.rate,
        "ordering_keyed_per_s": keyed.rate,
        "ordering_unkeyed_cpu_us": unkeyed.cpu_us,
        "ordering_keyed_cpu_us": keyed.cpu_us,
        "ordering_hot_gap_p50_ms": p50,
        "ordering_hot_gap_p99_ms": p99,
        "ordering_hot_per_s": hot.rate,
        "ordering_keyed_violations": keyed_check["violations"],
        "ordering_hot_violations": hot_check["violations"],
    }


def order_check(world, what: str) -> dict:
    """Whether each line (receiver, key) got its events in acceptance order.

    Acceptance order is the backlog's (the event's `order_id`, the order in
    which harness.backlog took their sequence numbers). Prints the first
    SHOWN violations. Returns violations, duplicates and the events in order.
    """
    from deliveries.models import Event

    accepted = {
        str(event_id): (key, index)
        for event_id, key, index in Event.objects.filter(
            tenant=world.tenant
        ).values_list("id", "ordering_key", "payload__order_id")
    }
    violations, duplicates, in_order, unknown = [], 0, 0, 0
    for number, receiver in enumerate(world.receivers):
        seen: set[str] = set()
        last: dict[str, int] = {}  # key -> the latest index that arrived
        for arrival in receiver.received:
            event_id = arrival.webhook_id
            if event_id in seen:
                duplicates += 1
                continue
            seen.add(event_id)
            if event_id not in accepted:
                unknown += 1
                continue
            key, index = accepted[event_id]
            if key is None:
                continue
            before = last.get(key, -1)
            if index < before:
                violations.append((number, key, index, before))
            else:
                in_order += 1
                last[key] = index
    for number, key, index, before in violations[:SHOWN]:
        print(
            f"    ! {what}: receiver {number}, key {key}: event {index} arrived "
            f"after event {before}",
            flush=True,
        )
    if len(violations) > SHOWN:
        print(f"    ! {what}: {len(violations) - SHOWN} more violations", flush=True)
    if unknown:
        print(f"    ! {what}: {unknown} requests of unknown events", flush=True)
    return {
        "violations": len(violations),
        "duplicates": duplicates,
        "in_order": in_order,
    }
