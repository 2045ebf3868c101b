"""Retention: rows the purge deletes per second, and ingest while it runs.

The retention database (`webhooks_bench_retention`) is seeded afresh for each
measurement with --retention-rows rows in all, every one past retention: events
of 60 days ago, FAN_OUT final deliveries each (1 % dead letters) and one attempt
per delivery (1 + 2 x FAN_OUT rows per event), written like the growth
database (bench/growth.py). The purge then runs back to back, as successive beat
runs would, until nothing expired is left; for the first --seconds of it wrk
posts events through gunicorn (the same figure alone is measured just before).
"""

import time

from bench import growth as g
from bench import harness as h
from bench import load
from bench import scenarios as sc

RETENTION_DB = h.BENCH_DB + "_retention"
SEED_TABLES = ("deliveries_event", "deliveries_delivery", "deliveries_deliveryattempt")
ROWS_PER_EVENT = 1 + 2 * sc.FAN_OUT
# The longest the purge may take before the scenario gives up (10 M rows at a
# few thousand rows/s is under an hour).
PURGE_LIMIT = 3 * 3600


def seed(rows: int) -> int:
    """Make the retention database hold about `rows` expired rows; how many."""
    started = time.monotonic()
    events = max(1, rows // ROWS_PER_EVENT)
    print(f"  seeding {RETENTION_DB} with {events * ROWS_PER_EVENT:,} rows ...")
    g.psql("postgres", f'DROP DATABASE IF EXISTS "{RETENTION_DB}" WITH (FORCE)')
    h.prepare_database(RETENTION_DB)
    h.use_database(RETENTION_DB)
    from subscriptions.services import endpoint_create
    from tenants.services import tenant_create

    tenant = tenant_create(name="expired", rate_limit=1_000_000)
    endpoints = [
        endpoint_create(tenant=tenant, url=f"https://old{i}.example.com/hooks")
        for i in range(sc.FAN_OUT)
    ]
    ddl = g.drop_secondary(RETENTION_DB, SEED_TABLES)
    event_id = g.UUID7.format(ts="ts", salt="i::text")
    delivery_id = g.UUID7.format(ts="e.created_at", salt="e.id::text || j")
    endpoint_array = "ARRAY[" + ",".join(f"'{e.pk}'::uuid" for e in endpoints) + "]"
    g.psql(
        RETENTION_DB,
        f"""
        SET synchronous_commit = off;
        INSERT INTO deliveries_event
          (id, tenant_id, event_type, payload, idempotency_key, request_hash,
           created_at)
        SELECT {event_id}, '{tenant.pk}', 'order.created',
               jsonb_build_object('order_id', i, 'total', '39.80'),
               NULL, md5(i::text) || md5(i::text), ts
        FROM (SELECT i, now() - interval '60 days' + i * interval '1 ms'
                AS ts FROM generate_series(1, {events}) AS i) AS s;
        INSERT INTO deliveries_delivery
          (id, tenant_id, event_id, endpoint_id, status, attempt_count, round_start,
           next_attempt_at, lease_expires_at, last_status_code, last_error,
           dead_letter_reason, succeeded_at, dead_lettered_at, created_at, updated_at)
        SELECT {delivery_id}, e.tenant_id, e.id, ({endpoint_array})[j],
               CASE WHEN n % 100 = 0 THEN 'dead_letter' ELSE 'succeeded' END,
               1, 0, NULL, NULL, 200, '', '', e.created_at, NULL,
               e.created_at, e.created_at
        FROM (SELECT *, row_number() OVER () AS n FROM deliveries_event) AS e,
             generate_series(1, {len(endpoints)}) AS j;
        INSERT INTO deliveries_deliveryattempt
          (delivery_id, number, started_at, duration_ms, outcome, request_headers,
           response_status, response_headers, response_body, error)
        SELECT id, 1, created_at, 5, 'success', '{{}}', 200, '{{}}', 'ok', ''
        FROM deliveries_delivery;
    """,
    )
    for statement in ddl:
        g.psql(RETENTION_DB, f"SET maintenance_work_mem = '512MB'; {statement}")
    for table in SEED_TABLES:
        g.psql(RETENTION_DB, f"VACUUM ANALYZE {table}")
    print(f"  seeded in {time.monotonic() - started:.0f} s", flush=True)
    return events * ROWS_PER_EVENT


def retention(ctx: "sc.Context") -> dict:
    """Rows purged per second; ingest alone and while the purge runs."""
    ctx.reset()  # queues and Redis (and the bench database's rows)
    seeded = seed(ctx.args.retention_rows)
    ctx.database = RETENTION_DB
    try:
        world = h.World()
        world.add_receivers(sc.FAN_OUT, event_type="bench.event")
        world.stop()  # no worker runs: the deliveries only wait in the queue
        with ctx.web() as web:
            common = sc.events_wrk(ctx, web, world)
            alone = load.wrk(**common)
            purge = h.Timed(_purge_until_done).start()
            during = load.wrk(**common)
            overlap = purge.thread.is_alive()
            deleted, elapsed = purge.wait(PURGE_LIMIT + 60)
            web.check()
    finally:
        ctx.reset()
        h.use_database(h.BENCH_DB)
        ctx.database = h.BENCH_DB
        # Emptied by the purge but not vacuumed: its files are of no further use.
        g.psql("postgres", f'DROP DATABASE IF EXISTS "{RETENTION_DB}" WITH (FORCE)')
    if not overlap:
        print("    ! the purge ended before wrk did: ingest during it is overstated")
    if deleted != seeded:
        print(f"    ! purged {deleted:,} of {seeded:,} rows")
    return {
        "retention_rows": deleted,
        "retention_deleted_rows_per_s": deleted / elapsed,
        "retention_ingest_alone_per_s": alone["rate"],
        "retention_ingest_during_purge_per_s": during["rate"],
    }


def _purge_until_done() -> int:
    """Purge runs back to back, as beat would run them: rows deleted."""
    from deliveries.services.retention import events_purge_expired

    deleted, started = 0, time.monotonic()
    while time.monotonic() - started < PURGE_LIMIT:
        result = events_purge_expired()
        deleted += result.rows
        if result.finished:
            break
    return deleted
