"""What the hot statements cost PostgreSQL, alone: `python -m bench.statements`.

One process, one connection, no other load: the CPU time of the PostgreSQL
backend serving this connection (from /proc) and of this process, per row, for
a one-row write transaction (the floor of any state change), the ingest
statement (an event and its fan-out to 3 endpoints) and the claim at batch sizes
of 1 to 50 (what a worker pays per delivery as its batches grow). Uses the
benchmark database and Redis database; publishing goes to the `bench.` queues,
emptied at the end.
"""

import argparse
import os
import time
import uuid
from pathlib import Path

from bench import harness as h

BATCHES = (1, 3, 10, 50)
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _measure(name: str, backend: int, count: int, run) -> None:
    """Run `run()` once; print CPU per row of this process and of PostgreSQL."""
    python, postgres = time.thread_time(), _cpu(backend)
    run()
    python = 1e6 * (time.thread_time() - python) / count
    postgres = 1e6 * (_cpu(backend) - postgres) / count
    print(f"| {name} | {python:,.0f} | {postgres:,.0f} |", flush=True)


def main(argv=None) -> None:
    """Seed deliveries, then time each statement."""
    parser = argparse.ArgumentParser(prog="python -m bench.statements")
    parser.add_argument("--rows", type=int, default=1500, help="rows per measurement")
    rows = parser.parse_args(argv).rows
    h.setup_django()
    h.prepare_database(h.BENCH_DB)
    h.use_database(h.BENCH_DB)
    h.reset_state()

    from django.db import connection

    from deliveries.models import Delivery
    from deliveries.services.claim import deliveries_claim
    from deliveries.services.ingest import event_ingest
    from subscriptions.models import Endpoint
    from tenants.services import tenant_create_with_key

    tenant = tenant_create_with_key(name=f"statements-{uuid.uuid4().hex[:8]}")
    tenant = tenant.api_key.tenant
    for n in range(3):
        Endpoint.objects.create(tenant=tenant, url=f"http://127.0.0.1:9/{n}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
        # A logged table (a temporary one writes no WAL): as any state change.
        cursor.execute("DROP TABLE IF EXISTS bench_one_row")
        cursor.execute("CREATE TABLE bench_one_row (id int PRIMARY KEY, n int)")
        cursor.execute("INSERT INTO bench_one_row VALUES (1, 0)")

    def ingest() -> None:
        for _ in range(rows // 3):
            event_ingest(tenant=tenant, event_type="bench.event", payload={"n": 1})

    def write() -> None:
        raw = connection.connection
        for _ in range(rows):
            raw.execute("UPDATE bench_one_row SET n = n + 1 WHERE id = 1", prepare=True)

    print("| statement | this process, µs per row | PostgreSQL, µs per row |")
    print("| --- | ---: | ---: |")
    _measure("a one-row UPDATE, committed", backend, rows, write)
    _measure("ingest: an event and 3 deliveries (per delivery)", backend, rows, ingest)
    for _ in range(rows):  # enough deliveries to claim in every batch size
        event_ingest(tenant=tenant, event_type="bench.event", payload={"n": 1})
    claimable = Delivery.objects.filter(tenant=tenant).values_list("pk", flat=True)
    ids = [str(pk) for pk in claimable]
    for batch in BATCHES:
        count = rows // batch * batch
        chunk, ids = ids[:count], ids[count:]
        if len(chunk) < count:
            break

        def claim(chunk=chunk, batch=batch) -> None:
            for start in range(0, len(chunk), batch):
                deliveries_claim(delivery_ids=chunk[start : start + batch])

        _measure(f"claim, batches of {batch}", backend, count, claim)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_one_row")
    h.reset_state()


if __name__ == "__main__":
    main()
