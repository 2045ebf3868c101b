"""Endpoint windows against none: drains alone and beside a dying endpoint, alternated.

    .venv/bin/python -m bench.windows --windows 0,1000,2000 --rounds 4

Each round drains, for every window size in turn, the isolation scenario's
backlog to 3 healthy endpoints alone and then beside a 4th that dies as the drain
starts (its share of the backlog queued). Sizes alternate within a round because
this machine's speed drifts more between minutes than a window changes a drain.
Prints each drain, then per window the medians of the healthy rate, of the
per-round ratio beside/alone and of machine CPU per healthy delivery. The
window is set in this process (the backlog's publisher) and in the workers.
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
    p = argparse.ArgumentParser(prog="python -m bench.windows", description=__doc__)
    p.add_argument("--windows", default="0,2000", help="comma-separated sizes")
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
    windows = [int(size) for size in own.windows.split(",")]
    h.setup_django()
    from django.conf import settings

    ctx = sc.Context(args=args, metrics_dir=tempfile.mkdtemp(prefix="bench-windows-"))
    events = ctx.drain_events()
    drains: dict[tuple[int, str], list[sc.Drained]] = {}
    for round_ in range(own.rounds):
        for size in windows:
            os.environ["WEBHOOK_ENDPOINT_WINDOW"] = str(size)  # the workers'
            settings.WEBHOOK_ENDPOINT_WINDOW = size  # the backlog's publisher
            for kind in KINDS:
                drained = sc.drain(
                    ctx, healthy=sc.FAN_OUT, dead=kind == "dying", events=events
                )
                drains.setdefault((size, kind), []).append(drained)
                print(
                    f"round {round_ + 1}, window {size}, {kind}: "
                    f"{drained.rate:,.0f}/s, {drained.cpu_us:,.0f} µs",
                    flush=True,
                )
    print()
    print("window | alone /s | dying /s | ratio (per round) | CPU µs alone / dying")
    for size in windows:
        alone, dying = drains[(size, "alone")], drains[(size, "dying")]
        ratios = [d.rate / a.rate for a, d in zip(alone, dying, strict=True)]
        each = ", ".join(f"{r:.2f}" for r in ratios)
        print(
            f"{size} | {_median(alone, 'rate'):,.0f} | {_median(dying, 'rate'):,.0f}"
            f" | {statistics.median(ratios):.2f} ({each})"
            f" | {_median(alone, 'cpu_us'):,.0f} / {_median(dying, 'cpu_us'):,.0f}"
        )
    return 0


def _median(drains: list, field: str) -> float:
    return statistics.median(getattr(d, field) for d in drains)


if __name__ == "__main__":
    sys.exit(main())
