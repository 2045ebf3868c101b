"""Ingest of several event types of one tenant, alternated in one web process.

This machine's speed drifts between minutes more than the difference some
scenarios measure (a schema, a filter), so they post each type in turn and
compare the means of each type's runs.
"""

from bench import load
from bench.scenarios import balanced_wrk
from bench.stack import Web


def alternated_rates(
    web: Web, *, key: str, args, order: list[str], seconds: int
) -> dict[str, list[float]]:
    """Events/s of each type in `order` (a type may come several times), after a
    warm-up with the first one; non-2xx answers are printed, not counted."""
    common = {
        "url": web.url,
        "key": key,
        "path": "/api/v1/events",
        "threads": args.wrk_threads,
        "connections": args.wrk_connections,
    }
    load.wrk(event_type=order[0], seconds=2, **common)  # warm-up
    rates: dict[str, list[float]] = {event_type: [] for event_type in order}
    for event_type in order:
        measured = balanced_wrk(web, event_type=event_type, seconds=seconds, **common)
        if measured["good"] < measured["requests"]:
            bad = measured["requests"] - measured["good"]
            print(f"    ! {bad} non-2xx answers to {event_type} events")
        rates[event_type].append(measured["rate"])
    web.check()
    return rates
