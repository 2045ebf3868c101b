"""Growth and resources: throughput on a big database, memory over many deliveries.

The growth database (`webhooks_bench_growth`) holds a seeded tenant's N delivery
rows (--growth-rows, and N/3 events) and M attempts (--growth-attempts, at least
one a delivery), spread evenly over the WEEKS full weeks before the current one:
each delivery gets its share of attempts a minute apart (the last one its 2xx, or
a 5xx for the 1 % of dead letters), so every week's attempts fill that week's
partition. Events and deliveries are written with INSERT ... SELECT
generate_series with their secondary indexes and constraints dropped and rebuilt
afterwards; each week's attempts into a bare table that is then ATTACHed as the
week's partition (ATTACH builds its indexes and checks its foreign key). The
tenant keeps its events for the longest retention, so neither the purge nor the
partition upkeep of the bench's own beat removes them. A marker table records N
and M: equal figures are reused as they are, anything else (or an interrupted
seeding) drops the database and seeds it again.
"""

import subprocess
import sys
import time
from datetime import UTC, datetime

from bench import harness as h
from bench import load
from bench import scenarios as sc

GROWTH_DB = h.BENCH_DB + "_growth"
SEED_TABLES = ("deliveries_event", "deliveries_delivery")
ATTEMPTS = "deliveries_deliveryattempt"
# Full weeks seeded before the current one (which the bench's own rows use).
WEEKS = 5
# An attempt's request headers as a worker stores them (about 200 bytes).
HEADERS = (
    '{"content-type": "application/json", "user-agent": "webhooks/1.0", '
    '"webhook-id": "msg_01a2f7c3e4b5d6a7b8c9d0e1f2a3b4c5", '
    '"webhook-timestamp": "1765000000", '
    '"webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="}'
)

# The bench's beat runs the hourly attempt-log cleanup: with these, it leaves the
# seeded weeks' logs alone (the tenant's retention keeps its events and the
# partitions; bench/drop.py removes some on purpose, then seeds them again).
KEEP_SEEDED = {
    "WEBHOOK_LOG_RETENTION_HOURS": str(24 * 36_500),
    "WEBHOOK_RETENTION_DAYS": "36500",
}

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


def seeded() -> tuple[int, int] | None:
    """The deliveries and attempts the growth database was completely seeded with."""
    try:
        found = psql(GROWTH_DB, "SELECT rows || ' ' || attempts FROM bench_seed")
    except subprocess.CalledProcessError:
        return None
    return tuple(int(n) for n in found.split()) if found else None


def seed_weeks(now: datetime | None = None) -> list[datetime]:
    """The first days of the seeded weeks, oldest first."""
    from deliveries.services.partitions import WEEK, week_start

    this_week = week_start(now or datetime.now(UTC))
    return [this_week - n * WEEK for n in range(WEEKS, 0, -1)]


def seed(rows: int, attempts: int = 0) -> None:
    """Make the growth database hold `rows` deliveries and `attempts` attempts
    (at least one a delivery; reused when it does)."""
    events = max(1, rows // sc.FAN_OUT)
    deliveries = events * sc.FAN_OUT
    attempts = max(attempts, deliveries)
    if seeded() == (rows, attempts):
        print(f"  growth database {GROWTH_DB}: {rows:,} rows already seeded")
        h.prepare_database(GROWTH_DB)  # migrations added since then, if any
        return
    started = time.monotonic()
    print(
        f"  seeding {GROWTH_DB} with {deliveries:,} deliveries and "
        f"{attempts:,} attempts ...",
        flush=True,
    )
    psql("postgres", f'DROP DATABASE IF EXISTS "{GROWTH_DB}" WITH (FORCE)')
    h.prepare_database(GROWTH_DB)
    h.use_database(GROWTH_DB)
    from subscriptions.services import endpoint_create
    from tenants.models import MAX_RETENTION_DAYS
    from tenants.services import tenant_create

    tenant = tenant_create(
        name="seeded", rate_limit=1_000_000, retention_days=MAX_RETENTION_DAYS
    )
    endpoints = [
        endpoint_create(tenant=tenant, url=f"https://seed{i}.example.com/hooks")
        for i in range(sc.FAN_OUT)
    ]
    h.use_database(h.BENCH_DB)
    weeks = seed_weeks()
    first, span = weeks[0].timestamp(), len(weeks) * 7 * 86_400
    ddl = drop_secondary(GROWTH_DB, SEED_TABLES)
    event_id = UUID7.format(ts="ts", salt="i::text")
    delivery_id = UUID7.format(ts="e.created_at", salt="e.id::text || j")
    endpoint_array = "ARRAY[" + ",".join(f"'{e.pk}'::uuid" for e in endpoints) + "]"
    # Delivery m (1..D) gets floor(m N / D) - floor((m - 1) N / D) attempts: N
    # in all, as evenly as whole numbers go.
    share = f"((m * {attempts}) / {deliveries} - ((m - 1) * {attempts}) / {deliveries})"
    last = f"e.created_at + ({share} - 1) * interval '1 minute' + interval '1 s'"
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
        FROM (SELECT i, to_timestamp({first} + (i - 1) * {span / events})
                AS ts FROM generate_series(1, {events}) AS i) AS s;
        INSERT INTO deliveries_delivery
          (id, tenant_id, event_id, endpoint_id, status, attempt_count, round_start,
           next_attempt_at, lease_expires_at, last_status_code, last_error,
           dead_letter_reason, succeeded_at, dead_lettered_at, created_at, updated_at)
        SELECT {delivery_id}, e.tenant_id, e.id, ({endpoint_array})[j],
               CASE WHEN n % 100 = 0 THEN 'dead_letter' ELSE 'succeeded' END,
               {share}, 0, NULL, NULL,
               CASE WHEN n % 100 = 0 THEN 503 ELSE 200 END,
               CASE WHEN n % 100 = 0 THEN 'HTTP 503' ELSE '' END,
               CASE WHEN n % 100 = 0 THEN 'retries exhausted' ELSE '' END,
               CASE WHEN n % 100 = 0 THEN NULL ELSE {last} END,
               CASE WHEN n % 100 = 0 THEN {last} END,
               e.created_at, {last}
        FROM (SELECT *, row_number() OVER (ORDER BY created_at) AS n
              FROM deliveries_event) AS e,
             generate_series(1, {len(endpoints)}) AS j,
             LATERAL (SELECT (e.n - 1) * {len(endpoints)} + j AS m) AS place;
    """,
    )
    for statement in ddl:
        psql(GROWTH_DB, f"SET maintenance_work_mem = '512MB'; {statement}")
    for table in SEED_TABLES:  # VACUUM cannot run in psql's one transaction
        psql(GROWTH_DB, f"VACUUM ANALYZE {table}")
    seeding = time.monotonic()
    for week in weeks:
        seed_week(week)
    print(f"  attempts seeded in {time.monotonic() - seeding:.0f} s", flush=True)
    psql(
        GROWTH_DB,
        f"CREATE TABLE bench_seed AS SELECT {rows}::bigint AS rows, "
        f"{attempts}::bigint AS attempts, '{weeks[-1].isoformat()}'::timestamptz "
        "+ interval '1 week' AS until",
    )
    size = psql(GROWTH_DB, f"SELECT pg_size_pretty(pg_database_size('{GROWTH_DB}'))")
    print(f"  seeded in {time.monotonic() - started:.0f} s ({size})", flush=True)


def seed_week(start: datetime) -> int:
    """Fill the partition of the week starting at `start` with the attempts of
    the seeded deliveries that started in it (replacing it); how many."""
    from deliveries.services.partitions import WEEK, partition_name

    name, end = partition_name(start), start + WEEK
    # A delivery's attempts are a minute apart: the longest run starts before.
    longest = psql(
        GROWTH_DB, "SELECT coalesce(max(attempt_count), 1) FROM deliveries_delivery"
    )
    psql(
        GROWTH_DB,
        f"""
        SET synchronous_commit = off;
        SET maintenance_work_mem = '512MB';
        DROP TABLE IF EXISTS "{name}";
        CREATE TABLE "{name}" (LIKE {ATTEMPTS} INCLUDING DEFAULTS);
        INSERT INTO "{name}" (id, delivery_id, number, started_at, duration_ms,
            outcome, request_headers, response_status, response_headers,
            response_body, error)
        SELECT nextval(pg_get_serial_sequence('{ATTEMPTS}', 'id')), d.id, a.j,
               a.at, 10 + a.j,
               CASE WHEN a.ok THEN 'success' ELSE '5xx' END, '{HEADERS}'::jsonb,
               CASE WHEN a.ok THEN 200 ELSE 503 END, '{{}}'::jsonb,
               CASE WHEN a.ok THEN 'ok' ELSE 'upstream unavailable' END, ''
        FROM deliveries_delivery AS d,
             LATERAL (
                SELECT j, d.created_at + (j - 1) * interval '1 minute' AS at,
                       j = d.attempt_count AND d.status = 'succeeded' AS ok
                FROM generate_series(1, d.attempt_count) AS j
             ) AS a
        WHERE d.created_at >= '{start.isoformat()}'::timestamptz
                              - {longest} * interval '1 minute'
          AND d.created_at < '{end.isoformat()}'
          AND a.at >= '{start.isoformat()}' AND a.at < '{end.isoformat()}';
        ALTER TABLE {ATTEMPTS} ATTACH PARTITION "{name}"
            FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}');
        """,
    )
    psql(GROWTH_DB, f'VACUUM ANALYZE "{name}"')
    return int(psql(GROWTH_DB, f'SELECT count(*) FROM "{name}"'))


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
        # A partitioned table's index is defined ON ONLY the parent: built
        # again as such, it would have no partition's index under it.
        back.insert(0, definition.replace(" ON ONLY ", " ON "))
    return back


def growth(ctx: "sc.Context") -> dict:
    """Ingest and delivery with N rows stored vs the empty database.

    Both in each run, side by side: the ingest and delivery scenarios' figures
    are minutes older, and this machine's speed drifts by a fifth in that time.
    """
    found = {}
    ctx.extra_env = KEEP_SEEDED  # on both, for a like-for-like pair
    for label, database in (("empty", h.BENCH_DB), ("seeded", GROWTH_DB)):
        h.use_database(database)
        ctx.database = database
        ctx.keep_tenant = seed_tenant() if label == "seeded" else None
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
    ctx.extra_env = {}
    return found


def seed_tenant():
    """The seeded tenant's id (the reset keeps its rows)."""
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


if __name__ == "__main__":  # pragma: no cover (seed only: python -m bench.growth N M)
    h.setup_django()
    seed(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0)
