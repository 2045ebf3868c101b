"""Drains alone and beside a dying endpoint, variants alternated within each round.

`bench.endpoint_queues` runs it. Each round drains, for
every variant in turn, the isolation scenario's backlog to 3 healthy endpoints
alone and then beside a 4th that dies as the drain starts (its share of the
backlog queued). Variants alternate within a round because this machine's speed
drifts more between minutes than a variant changes a drain. Prints each drain,
then per variant the medians of the healthy rate, of the per-round ratio
beside/alone and of machine CPU per healthy delivery.
"""

import argparse
import statistics
import tempfile
from collections.abc import Callable

from bench import harness as h
from bench import scenarios as sc
from bench.__main__ import parse_args

KINDS = ("alone", "dying")


def run(
    argv,
    *,
    prog: str,
    description: str,
    option: str,
    default: str,
    apply: Callable[[str], None],
    after: Callable[[str], str] | None = None,
) -> int:
    """Parse `argv`, run the rounds, print the summary.

    `option` (say `--variants`) lists the variants, comma-separated; `apply(v)`
    sets variant v up before its drains (in this process and the workers'
    environment); `after(v)`, if given, runs after each drain and returns a
    note for its line.
    """
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument(option, dest="variants", default=default, help="comma-separated")
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
    ctx = sc.Context(args=args, metrics_dir=tempfile.mkdtemp(prefix="bench-alt-"))
    events = ctx.drain_events()
    drains: dict[tuple[str, str], list[sc.Drained]] = {}
    if after is not None:
        after("")  # what an earlier invocation left
    for round_ in range(own.rounds):
        for variant in variants:
            apply(variant)
            for kind in KINDS:
                drained = sc.drain(
                    ctx, healthy=sc.FAN_OUT, dead=kind == "dying", events=events
                )
                note = after(variant) if after is not None else ""
                drains.setdefault((variant, kind), []).append(drained)
                print(
                    f"round {round_ + 1}, {variant}, {kind}: "
                    f"{drained.rate:,.0f}/s, {drained.cpu_us:,.0f} µs{note}",
                    flush=True,
                )
    print()
    print("variant | alone /s | dying /s | ratio (per round) | CPU µs alone / dying")
    for variant in variants:
        alone, dying = drains[(variant, "alone")], drains[(variant, "dying")]
        ratios = [d.rate / a.rate for a, d in zip(alone, dying, strict=True)]
        each = ", ".join(f"{r:.2f}" for r in ratios)
        print(
            f"{variant} | {_median(alone, 'rate'):,.0f}"
            f" | {_median(dying, 'rate'):,.0f}"
            f" | {statistics.median(ratios):.2f} ({each})"
            f" | {_median(alone, 'cpu_us'):,.0f} / {_median(dying, 'cpu_us'):,.0f}"
        )
    return 0


def _median(drains: list, field: str) -> float:
    return statistics.median(getattr(d, field) for d in drains)
