"""Growth and resources: throughput on a big database, memory over many deliveries.

The growth database (`webhooks_bench_growth`) holds N delivery rows (and N/3
events) of a seeded tenant, written with INSERT ... SELECT generate_series with
the secondary indexes and constraints dropped and rebuilt afterwards. A marker
table records N: an equal N is reused as is, anything else (or an interrupted
seeding) drops the database and seeds it again.
"""

import subprocess
import sys
import time

from bench import harness as h
from bench import load
from bench import scenarios as sc

GROWTH_DB = h.BENCH_DB + "_growth"
SEED_TABLES = ("deliveries_event", "deliveries_delivery")

# Time-ordered UUIDs like the application's uuid7: unix ms, version 7, randomness.
UUID7 = (
    "(lpad(to_hex((extract(epoch FROM {ts}) * 1000)::bigint), 12, '0') || '7' || "
    "substr(md5({salt}), 1, 3) || '8' || substr(md5({salt}), 4, 15))::uuid"
)


def psql(database: str, sql: str) -> str:
    return subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atq",
            "-c",
            sql,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def seeded_rows() -> int | None:
    """The N the growth database was completely seeded with, or None."""
    try:
        return int(psql(GROWTH_DB, "SELECT rows FROM bench_seed") or 0) or None
    except subprocess.CalledProcessError:
        return None


def seed(rows: int) -> None:
    """Make the growth database hold `rows` deliveries (reused when it does)."""
    if seeded_rows() == rows:
        print(f"  growth database {GROWTH_DB}: {rows:,} rows already seeded")
        h.prepare_database(GROWTH_DB)  # migrations added since then, if any
        return
    started = time.monotonic()
    print(f"  seeding {GROWTH_DB} with {rows:,} delivery rows ...", flush=True)
    psql("postgres", f'DROP DATABASE IF EXISTS "{GROWTH_DB}" WITH (FORCE)')
    h.prepare_database(GROWTH_DB)
    h.use_database(GROWTH_DB)
    from subscriptions.services import endpoint_create
    from tenants.services import tenant_create

    tenant = tenant_create(name="seeded", rate_limit=1_000_000)
    endpoints = [
        endpoint_create(tenant=tenant, url=f"https://seed{i}.example.com/hooks")
        for i in range(sc.FAN_OUT)
    ]
    h.use_database(h.BENCH_DB)
    events = rows // len(endpoints)
    ddl = drop_secondary(GROWTH_DB, SEED_TABLES)
    event_id = UUID7.format(ts="ts", salt="i::text")
    delivery_id = UUID7.format(ts="e.created_at", salt="e.id::text || j")
    endpoint_array = "ARRAY[" + ",".join(f"'{e.pk}'::uuid" for e in endpoints) + "]"
    psql(
        GROWTH_DB,
        f"""
        SET synchronous_commit = off;
        INSERT INTO deliveries_event
          (id, tenant_id, event_type, payload, idempotency_key, request_hash,
           created_at)
        SELECT {event_id}, '{tenant.pk}', 'order.created',
               jsonb_build_object('order_id', i, 'total', '39.80'),
               'seed-' || i, md5(i::text) || md5(i::text), ts
        FROM (SELECT i, now() - interval '30 days' + i * interval '200 microseconds'
                AS ts FROM generate_series(1, {events}) AS i) AS s;
        INSERT INTO deliveries_delivery
          (id, tenant_id, event_id, endpoint_id, status, attempt_count, round_start,
           next_attempt_at, lease_expires_at, last_status_code, last_error,
           dead_letter_reason, succeeded_at, dead_lettered_at, created_at, updated_at)
        SELECT {delivery_id}, e.tenant_id, e.id, ({endpoint_array})[j],
               CASE WHEN n % 100 = 0 THEN 'dead_letter' ELSE 'succeeded' END,
               1, 0, NULL, NULL,
               CASE WHEN n % 100 = 0 THEN 500 ELSE 200 END,
               CASE WHEN n % 100 = 0 THEN 'HTTP 500' ELSE '' END,
               CASE WHEN n % 100 = 0 THEN 'retries exhausted' ELSE '' END,
               CASE WHEN n % 100 = 0 THEN NULL ELSE e.created_at END,
               CASE WHEN n % 100 = 0 THEN e.created_at END,
               e.created_at, e.created_at
        FROM (SELECT *, row_number() OVER () AS n FROM deliveries_event) AS e,
             generate_series(1, {len(endpoints)}) AS j;
    """,
    )
    for statement in ddl:
        psql(GROWTH_DB, f"SET maintenance_work_mem = '512MB'; {statement}")
    for table in SEED_TABLES:  # VACUUM cannot run in psql's one transaction
        psql(GROWTH_DB, f"VACUUM ANALYZE {table}")
    psql(GROWTH_DB, f"CREATE TABLE bench_seed AS SELECT {rows}::bigint AS rows")
    print(f"  seeded in {time.monotonic() - started:.0f} s", flush=True)


def drop_secondary(database: str, tables) -> list[str]:
    """Drop unique/foreign-key constraints and secondary indexes; return DDL back."""
    names = ",".join(f"'{t}'" for t in tables)
    constraints = psql(
        database,
        f"""
        SELECT conrelid::regclass || '|' || conname || '|' || pg_get_constraintdef(oid)
        FROM pg_constraint WHERE conrelid::regclass::text IN ({names})
          AND contype IN ('u', 'f')""",
    ).splitlines()
    indexes = psql(
        database,
        f"""
        SELECT i.indexname || '|' || i.indexdef FROM pg_indexes i
        WHERE i.tablename IN ({names}) AND i.indexname NOT IN (
          SELECT conname FROM pg_constraint WHERE contype IN ('p', 'u'))""",
    ).splitlines()
    back = []
    for line in constraints:
        table, name, definition = line.split("|", 2)
        psql(database, f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        back.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for line in indexes:
        name, definition = line.split("|", 1)
        psql(database, f'DROP INDEX "{name}"')
        back.insert(0, definition)
    return back


def growth(ctx: "sc.Context") -> dict:
    """Ingest and delivery with N rows stored vs the empty database.

    Both in each run, side by side: the ingest and delivery scenarios' figures
    are minutes older, and this machine's speed drifts by a fifth in that time.
    """
    found = {}
    for label, database in (("empty", h.BENCH_DB), ("seeded", GROWTH_DB)):
        h.use_database(database)
        ctx.database = database
        ctx.keep_tenant = _seed_tenant() if label == "seeded" else None
        try:
            found[f"growth_{label}_ingest_per_s"] = sc.ingest(ctx)[
                "ingest_events_per_s"
            ]
            drained = sc.drain(
                ctx, healthy=sc.FAN_OUT, dead=False, events=ctx.drain_events()
            )
            found[f"growth_{label}_delivery_per_s"] = drained.rate
            found[f"growth_{label}_delivery_cpu_us"] = drained.cpu_us
        finally:
            ctx.reset()
            h.use_database(h.BENCH_DB)
            ctx.database, ctx.keep_tenant = h.BENCH_DB, None
    return found


def _seed_tenant():
    from tenants.models import Tenant

    return Tenant.objects.get(name="seeded").pk


def resources(ctx: "sc.Context") -> dict:
    """Web and worker RSS after a warm-up and after M more deliveries."""
    args = ctx.args
    ctx.reset()
    world = h.World()
    # Counting only: a record of each of 1M deliveries would fill the harness.
    world.add_receivers(sc.FAN_OUT, event_type="ok.event", keep=False)
    # wrk bursts of a few seconds each; the next waits until at most two bursts'
    # deliveries are still queued. (wrk's own request limit left it hanging.)
    burst_seconds = 5
    delivered = 0

    def count() -> int:
        nonlocal delivered
        delivered += sum(receiver.take_count() for receiver in world.receivers)
        return delivered

    def push(deliveries: int, web, workers, deadline: float) -> None:
        sent = 0
        while sent < deliveries and time.monotonic() < deadline:
            result = load.wrk(
                url=web.url,
                path="/api/v1/events",
                key=world.key,
                event_type="ok.event",
                seconds=burst_seconds,
                threads=args.wrk_threads,
                connections=16,
            )
            burst = result["good"] * sc.FAN_OUT
            sent += burst
            queued = 2 * burst
            while count() < start_count + sent - queued and time.monotonic() < deadline:
                workers.check()
                time.sleep(0.2)
        while count() < start_count + sent and time.monotonic() < deadline:
            time.sleep(0.2)

    deadline = time.monotonic() + args.resources_timeout
    try:
        with ctx.web() as web, ctx.workers() as workers:
            sc.wait_workers_ready(workers)
            start_count = 0
            push(max(9000, args.resources_deliveries // 10), web, workers, deadline)
            before_web, before_worker = web.rss_kib(), workers.rss_kib()
            start_count = count()
            started = time.monotonic()
            push(args.resources_deliveries, web, workers, deadline)
            done = count() - start_count
            elapsed = time.monotonic() - started
            after_web, after_worker = web.rss_kib(), workers.rss_kib()
    finally:
        world.stop()
    if time.monotonic() > deadline:
        print(f"    ! resources stopped at its time limit after {done:,} deliveries")
    return {
        "resources_deliveries": done,
        "resources_per_s": done / elapsed if elapsed else float("nan"),
        "web_rss_before_mib": before_web / 1024,
        "web_rss_after_mib": after_web / 1024,
        "web_rss_growth_pct": 100 * (after_web - before_web) / before_web,
        "worker_rss_before_mib": before_worker / 1024,
        "worker_rss_after_mib": after_worker / 1024,
        "worker_rss_growth_pct": 100 * (after_worker - before_worker) / before_worker,
    }


if __name__ == "__main__":  # pragma: no cover (seed only: python -m bench.growth N)
    h.setup_django()
    seed(int(sys.argv[1]))
