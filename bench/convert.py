"""The online conversion of the attempts table (migration 0012) on a populated table.

`python -m bench.convert --rows 2000000`: a database of its own
(`webhooks_bench_convert`) migrated up to 0011 and seeded with --rows attempts
(two per delivery), then `manage.py migrate deliveries 0012` while a writer
records attempts as the workers do (the delivery's count, then its attempt row,
in one transaction) and a reader lists one delivery's attempts, each back to
back on its own connection. Prints how long the migration took and the longest
time a write and a read waited; checks that every row is still there.
"""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

import psycopg

from bench import growth as g
from bench import harness as h

DATABASE = h.BENCH_DB + "_convert"
TABLE = "deliveries_deliveryattempt"


def seed(rows: int) -> None:
    """A database at migration 0011 holding `rows` attempts (two per delivery)."""
    g.psql("postgres", f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    g.psql("postgres", f'CREATE DATABASE "{DATABASE}"')
    env = {**os.environ, **h.BENCH_ENV, "DATABASE_URL": h.database_url(DATABASE)}
    manage = [sys.executable, "manage.py", "migrate", "--noinput", "-v0"]
    subprocess.run(manage, cwd=h.REPO, env=env, check=True)  # every app
    subprocess.run([*manage, "deliveries", "0011"], cwd=h.REPO, env=env, check=True)
    deliveries = max(1, rows // 2)
    g.psql(
        DATABASE,
        f"""
        SET synchronous_commit = off;
        INSERT INTO tenants_tenant (id, name, is_active, created_at,
            catalog_version)
        VALUES ('00000000-0000-7000-8000-000000000001', 'convert', true, now(), 0);
        INSERT INTO subscriptions_endpoint (id, tenant_id, url, description,
            event_types, headers, is_active, disabled_reason, created_at,
            updated_at)
        VALUES ('00000000-0000-7000-8000-000000000002',
                '00000000-0000-7000-8000-000000000001', 'https://x.example/h', '',
                '{{}}', '{{}}', true, '', now(), now());
        INSERT INTO deliveries_event (id, tenant_id, event_type, payload,
            request_hash, created_at)
        SELECT {g.UUID7.format(ts="ts", salt="i::text")},
               '00000000-0000-7000-8000-000000000001', 'order.created', '{{}}', '',
               ts
        FROM (SELECT i, now() - interval '20 days' + i * interval '500 ms' AS ts
              FROM generate_series(1, {deliveries}) AS i) AS s;
        INSERT INTO deliveries_delivery (id, tenant_id, event_id, endpoint_id,
            status, attempt_count, round_start, last_error, dead_letter_reason,
            created_at, updated_at)
        SELECT e.id, e.tenant_id, e.id, '00000000-0000-7000-8000-000000000002',
               'succeeded', 2, 0, '', '', e.created_at, e.created_at
        FROM deliveries_event AS e;
        INSERT INTO {TABLE} (delivery_id, number, started_at, duration_ms, outcome,
            request_headers, response_status, response_headers, response_body,
            error)
        SELECT d.id, n, d.created_at + n * interval '1 s', 12,
               CASE n WHEN 1 THEN '5xx' ELSE 'success' END,
               '{{"content-type": "application/json"}}', 200, '{{}}', 'ok', ''
        FROM deliveries_delivery AS d, generate_series(1, 2) AS n;
        """,
    )
    g.psql(DATABASE, f"VACUUM ANALYZE {TABLE}")


class Client(threading.Thread):
    """One connection running `statement` back to back, timing each."""

    def __init__(self, work):
        super().__init__(daemon=True)
        self.work, self.times, self.starts = work, [], []
        self.worst, self.worst_at = 0.0, 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(h.database_url(DATABASE), autocommit=True) as conn:
            while not self.stop.is_set():
                started = time.monotonic()
                with conn.transaction():
                    self.work(conn)
                took = time.monotonic() - started
                if took > self.worst:
                    self.worst, self.worst_at = took, started
                self.times.append(took)
                self.starts.append(started)

    def longest_before(self, moment: float) -> float:
        """The longest transaction started before `moment` (the baseline)."""
        return max(
            t for t, at in zip(self.times, self.starts, strict=True) if at < moment
        )


def write(conn) -> None:
    """Record an attempt as the workers do: count, then the row."""
    (delivery_id, number) = conn.execute(
        "UPDATE deliveries_delivery SET attempt_count = attempt_count + 1 "
        "WHERE id = (SELECT id FROM deliveries_delivery ORDER BY id DESC LIMIT 1) "
        "RETURNING id, attempt_count"
    ).fetchone()
    conn.execute(
        f"INSERT INTO {TABLE} (delivery_id, number, started_at, duration_ms, "
        "outcome, request_headers, response_status, response_headers, "
        "response_body, error) VALUES (%s, %s, now(), 5, 'success', '{}', 200, "
        "'{}', 'ok', '')",
        (delivery_id, number),
    )


def read(conn) -> None:
    """A delivery's attempt list, as the API shows it."""
    conn.execute(
        f"SELECT * FROM {TABLE} WHERE delivery_id = (SELECT id FROM "
        "deliveries_delivery ORDER BY id LIMIT 1) ORDER BY number"
    ).fetchall()


def _clock(moment: float) -> str:
    """A time.monotonic() moment as the wall clock's HH:MM:SS."""
    return time.strftime(
        "%H:%M:%S", time.gmtime(time.time() - time.monotonic() + moment)
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.convert")
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()
    started = time.monotonic()
    seed(args.rows)
    print(f"seeded {args.rows:,} attempts in {time.monotonic() - started:.0f} s")
    before = int(g.psql(DATABASE, f"SELECT count(*) FROM {TABLE}"))
    clients = [Client(write), Client(read)]
    for client in clients:
        client.start()
    time.sleep(2)
    env = {**os.environ, **h.BENCH_ENV, "DATABASE_URL": h.database_url(DATABASE)}
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "deliveries", "0012"],
        cwd=h.REPO,
        env=env,
        check=True,
    )
    took = time.monotonic() - started
    time.sleep(2)
    for client in clients:
        client.stop.set()
        client.join(30)
    after = int(g.psql(DATABASE, f"SELECT count(*) FROM {TABLE}"))
    kind = g.psql(DATABASE, f"SELECT relkind FROM pg_class WHERE relname = '{TABLE}'")
    writer, reader = clients
    print(
        f"migration 0012: {took:.1f} s on {before:,} rows; partitioned: {kind == 'p'}"
    )
    for name, client in (("write", writer), ("read", reader)):
        times = sorted(client.times)
        print(
            f"{name}: {len(times):,} transactions, median "
            f"{statistics.median(times) * 1000:.1f} ms, p99.9 "
            f"{times[int(len(times) * 0.999)] * 1000:.1f} ms, longest "
            f"{times[-1] * 1000:.0f} ms at +{client.worst_at - started:.1f} s "
            f"[{_clock(client.worst_at)} UTC, for the server log] "
            f"(longest in the 2 s before: "
            f"{client.longest_before(started) * 1000:.0f} ms)"
        )
    kept = after - len(writer.times) == before
    print(f"rows: {before:,} before, {after:,} after ({len(writer.times):,} written)")
    g.psql("postgres", f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    return 0 if kept and kind == "p" else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
