"""Endpoint queues against one shared queue: drains alone and beside a dying endpoint.

    .venv/bin/python -m bench.endpoint_queues --rounds 4

Each round drains, for each variant in turn (`shared`: WEBHOOK_ENDPOINT_QUEUES
off; `queues`: on; `queuesN`: on with a prefetch of N per endpoint queue), the
isolation scenario's backlog to 3 healthy endpoints alone and then beside a 4th
that dies as the drain starts (its share of the backlog queued). Variants
alternate within a round because this machine's speed drifts more between
minutes than a variant changes a drain. Prints each drain (with the messages
its endpoints' queues still held at its end), then per variant the medians of
the healthy rate, of the per-round ratio beside/alone and of machine CPU per
healthy delivery. The settings are applied in this process (the backlog's
publisher) and in the workers; after each drain the endpoint queues and their
announcements are dropped, so that no drain's workers read the queues of the
drains before.
"""

import argparse
import os
import statistics
import sys
import tempfile

from bench import harness as h
from bench import scenarios as sc
from bench.__main__ import parse_args

KINDS = ("alone", "dying")


def main(argv=None) -> int:
    """Run the rounds and print the summary."""
    p = argparse.ArgumentParser(
        prog="python -m bench.endpoint_queues", description=__doc__
    )
    p.add_argument("--variants", default="shared,queues", help="shared, queues")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--delivery-rate-guess", type=float, default=2000)
    own = p.parse_args(argv)
    args = parse_args(
        [
            "--scenarios=isolation",
            f"--seconds={own.seconds}",
            f"--delivery-rate-guess={own.delivery_rate_guess}",
        ]
    )
    variants = own.variants.split(",")
    h.setup_django()
    from django.conf import settings

    ctx = sc.Context(
        args=args, metrics_dir=tempfile.mkdtemp(prefix="bench-endpoint-queues-")
    )
    events = ctx.drain_events()
    drains: dict[tuple[str, str], list[sc.Drained]] = {}
    _drop_endpoint_queues()
    for round_ in range(own.rounds):
        for size in variants:
            on = size.startswith("queues")
            os.environ["WEBHOOK_ENDPOINT_QUEUES"] = "1" if on else "0"  # the workers'
            # queuesN: a prefetch of N per endpoint queue
            prefetch = size.removeprefix("queues") if on else ""
            os.environ["WEBHOOK_ENDPOINT_QUEUE_PREFETCH"] = prefetch or "0"
            settings.WEBHOOK_ENDPOINT_QUEUES = on  # the backlog's publisher
            for kind in KINDS:
                drained = sc.drain(
                    ctx, healthy=sc.FAN_OUT, dead=kind == "dying", events=events
                )
                left = _drop_endpoint_queues()
                drains.setdefault((size, kind), []).append(drained)
                print(
                    f"round {round_ + 1}, {size}, {kind}: "
                    f"{drained.rate:,.0f}/s, {drained.cpu_us:,.0f} µs"
                    + (f", left in endpoint queues: {left}" if on else ""),
                    flush=True,
                )
    print()
    print("variant | alone /s | dying /s | ratio (per round) | CPU µs alone / dying")
    for size in variants:
        alone, dying = drains[(size, "alone")], drains[(size, "dying")]
        ratios = [d.rate / a.rate for a, d in zip(alone, dying, strict=True)]
        each = ", ".join(f"{r:.2f}" for r in ratios)
        print(
            f"{size} | {_median(alone, 'rate'):,.0f} | {_median(dying, 'rate'):,.0f}"
            f" | {statistics.median(ratios):.2f} ({each})"
            f" | {_median(alone, 'cpu_us'):,.0f} / {_median(dying, 'cpu_us'):,.0f}"
        )
    return 0


def _drop_endpoint_queues() -> list[int]:
    """Delete every announced endpoint queue; the messages each still held."""
    from django.conf import settings
    from kombu import Connection

    from deliveries import endpoint_queues
    from webhooks_project.queues import endpoint_queue_name
    from webhooks_project.redis_client import get_redis

    left = []
    with Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.channel()
        for endpoint_id in endpoint_queues.announced_since(0):
            name = endpoint_queue_name(endpoint_id)
            try:
                left.append(channel.queue_declare(name, passive=True).message_count)
                channel.queue_delete(name)
            except conn.channel_errors:  # gone already; the channel closed
                channel = conn.channel()
    get_redis().delete(endpoint_queues.ANNOUNCED_KEY)
    return sorted(left)


def _median(drains: list, field: str) -> float:
    return statistics.median(getattr(d, field) for d in drains)


if __name__ == "__main__":
    sys.exit(main())
