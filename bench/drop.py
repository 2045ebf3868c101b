"""Retention on the growth database: batched deletes vs dropping a partition.

On the seeded growth database (bench/growth.py), the oldest seeded week's
attempts leave twice, side by side: first its first day's (the succeeded
deliveries' logs) through the hourly attempt-log cleanup as it runs in
production (`attempt_logs_cleanup`, 5,000 deliveries' attempts a statement),
then the rest of the week by dropping its partition (`attempt_partition_drop`),
while wrk posts events through gunicorn each time (and once before, alone). The
week is seeded again afterwards, so the database stays as the marker says.
"""

import time
from datetime import UTC, datetime, timedelta

from bench import growth as g
from bench import harness as h
from bench import load
from bench import scenarios as sc

# The longest the batched delete may take before the scenario gives up on it.
DELETE_LIMIT = 3600


def drop(ctx: "sc.Context") -> dict:
    """A day of attempts deleted in batches, a week's partition dropped, and
    ingest alone and during each."""
    from django.conf import settings

    from deliveries.services.partitions import (
        attempt_partition_drop,
        partition_name,
    )
    from deliveries.services.sweeps import attempt_logs_cleanup

    until = g.psql(g.GROWTH_DB, "SELECT extract(epoch FROM until) FROM bench_seed")
    week = datetime.fromtimestamp(float(until), UTC) - timedelta(weeks=g.WEEKS)
    name = partition_name(week)
    # The cleanup as it would run once the first day's successes are past
    # WEBHOOK_LOG_RETENTION_HOURS, and not the next day's.
    cleanup_at = week + timedelta(days=1, hours=settings.WEBHOOK_LOG_RETENTION_HOURS)
    h.use_database(g.GROWTH_DB)
    ctx.database, ctx.keep_tenant = g.GROWTH_DB, g.seed_tenant()
    ctx.extra_env = g.KEEP_SEEDED
    found = {}
    try:
        ctx.reset()
        world = h.World()
        world.add_receivers(sc.FAN_OUT, event_type="bench.event")
        world.stop()  # no worker runs: the deliveries only wait in the queue
        with ctx.web() as web:
            common = sc.events_wrk(ctx, web, world)
            found["drop_ingest_alone_per_s"] = load.wrk(**common)["rate"]
            delete = h.Timed(lambda: attempt_logs_cleanup(now=cleanup_at)).start()
            during = load.wrk(**common)["rate"]
            if not delete.thread.is_alive():
                print("    ! the batched delete ended before wrk: ingest overstated")
            deleted, took = delete.wait(DELETE_LIMIT)
            found["drop_ingest_during_delete_per_s"] = during
            found["drop_delete_day_rows"] = deleted
            found["drop_delete_day_s"] = took
            found["drop_delete_rows_per_s"] = deleted / took
            rows = int(g.psql(g.GROWTH_DB, f'SELECT count(*) FROM "{name}"'))
            dropped = h.Timed(lambda: attempt_partition_drop(name)).start()
            found["drop_ingest_during_drop_per_s"] = load.wrk(**common)["rate"]
            _, took = dropped.wait(60)
            found["drop_week_rows"] = rows
            found["drop_week_ms"] = took * 1000
            web.check()
    finally:
        ctx.reset()
        h.use_database(h.BENCH_DB)
        ctx.database, ctx.keep_tenant, ctx.extra_env = h.BENCH_DB, None, {}
        started = time.monotonic()
        restored = g.seed_week(week)
        print(f"    week {name} seeded again: {restored:,} attempts", end=" ")
        print(f"in {time.monotonic() - started:.0f} s", flush=True)
    return found
