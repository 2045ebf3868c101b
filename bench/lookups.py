"""Name lookups through deliveries.resolver against getaddrinfo called directly.

    .venv/bin/python -m bench.lookups --rounds 5 --count 3000

What the resolver's hand-over costs (a reused lookup thread, the shared-lookup
table, the deadline heap) for a name the hosts file answers, the cheapest lookup
there is, so the hand-over is all the difference: wall and CPU time per lookup,
one caller after another and 16 callers at once, the two alternated in each
round. Prints each round and the medians, with the ratio resolver/direct. No
network, no database.
"""

import argparse
import os
import socket
import statistics
import sys
import threading
import time

NAME = "localhost"
CALLERS = 16


def main(argv=None) -> int:
    """Run the rounds and print the table."""
    p = argparse.ArgumentParser(prog="python -m bench.lookups", description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--count", type=int, default=3000, help="lookups per caller")
    args = p.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")
    os.environ.setdefault("DJANGO_DEVELOPMENT", "1")
    os.environ["WEBHOOK_DNS_SERVERS"] = ""
    import django

    django.setup()
    from deliveries.resolver import lookup

    def direct(name: str, port: int):
        return socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)

    ways = {"direct": direct, "resolver": lookup}
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for round_ in range(args.rounds):
        for callers in (1, CALLERS):
            for way, function in ways.items():
                wall, cpu = _measure(function, callers, args.count)
                results.setdefault((way, callers), []).append((wall, cpu))
                print(
                    f"round {round_ + 1}, {callers} caller(s), {way}: "
                    f"{wall:.1f} µs wall, {cpu:.1f} µs CPU a lookup",
                    flush=True,
                )
    print()
    print("callers | way | wall µs a lookup | CPU µs a lookup | CPU ratio to direct")
    for callers in (1, CALLERS):
        base = statistics.median(cpu for _, cpu in results[("direct", callers)])
        for way in ways:
            walls = [wall for wall, _ in results[(way, callers)]]
            cpus = [cpu for _, cpu in results[(way, callers)]]
            print(
                f"{callers} | {way} | {statistics.median(walls):.1f}"
                f" | {statistics.median(cpus):.1f}"
                f" | {statistics.median(cpus) / base:.1f}"
            )
    return 0


def _measure(function, callers: int, count: int) -> tuple[float, float]:
    """Wall and process CPU microseconds a lookup, `callers` threads at once."""

    def caller() -> None:
        for _ in range(count):
            function(NAME, 443)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    wall, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    lookups = callers * count
    return (
        (time.perf_counter() - wall) / lookups * 1e6,
        (time.process_time() - cpu) / lookups * 1e6,
    )


if __name__ == "__main__":
    sys.exit(main())
