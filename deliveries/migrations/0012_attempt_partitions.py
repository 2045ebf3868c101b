"""Partition the attempts table by week of started_at, online.

PostgreSQL cannot turn a table into a partitioned one in place, and its unique
indexes must include the partition key. On a table with rows nothing below
rewrites or scans it under a lock that blocks writes:

1. the indexes the partitioned table needs, built CONCURRENTLY on the old table:
   (id, started_at) unique, for the primary key, and (delivery_id, number);
2. CHECK (started_at < cutover) added NOT VALID (a moment's lock), then
   VALIDATEd (a scan that lets writes go on); the cutover is the start of a
   week one to eight days ahead, so every row written meanwhile passes it;
3. one short transaction (lock_timeout, retried): the old table is renamed
   `..._legacy`, the partitioned table created with the default partition, and
   the old table ATTACHed as the partition FROM (MINVALUE) TO (cutover). The
   validated check spares ATTACH its scan, the prepared indexes and the old
   foreign key are adopted as they are. Only catalog changes happen under the
   locks (ACCESS EXCLUSIVE on attempts, SHARE ROW EXCLUSIVE on deliveries).

The legacy partition then takes the rows until the cutover and is dropped
whole like any other once its range is past the horizon. An empty table (a
fresh database, the tests) is simply replaced. The reverse copies every row
into a plain table under lock: for a test database or an offline rollback.

The unique (delivery, number) becomes a plain index: a number is taken as the
delivery's attempt_count + 1 under its row lock, in the transaction that
inserts the attempt and increments the count (deliveries/services/recording.py),
so two attempts of a delivery never get the same number; nothing relied on the
constraint (no ON CONFLICT on attempts).
"""

import time
from datetime import timedelta

import psycopg.errors
from django.db import DatabaseError, migrations, models, transaction
from django.utils import timezone

TABLE = "deliveries_deliveryattempt"
LEGACY = f"{TABLE}_legacy"
DEFAULT = f"{TABLE}_default"
DELIVERIES = "deliveries_delivery"
CHECK = "attempt_legacy_before_cutover"
PK_INDEX = "attempt_legacy_id_started_at"
NUMBER_INDEX = "attempt_legacy_delivery_number"
INDEX = "attempt_delivery_number"
# Each try at the swap waits this long at most for its locks (writers queue
# behind a waiting ACCESS EXCLUSIVE request: this bounds their stall), then
# rolls back and tries again a moment later.
LOCK_TIMEOUT = "1s"
TRIES = 120


def partition(apps, schema_editor) -> None:
    """Convert the attempts table, then create the weeks ahead."""
    from deliveries.services.partitions import attempt_partitions_create_ahead

    now = timezone.now()
    convert(schema_editor.connection, now=now)
    attempt_partitions_create_ahead(now=now)


def convert(connection, *, now) -> None:
    """Make TABLE partitioned, keeping its rows in a legacy partition (online)."""
    from deliveries.services.partitions import week_start

    cutover = week_start(now + timedelta(days=1)) + timedelta(days=7)
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [TABLE])
            if cursor.fetchone()[0] == "p":
                return  # already done
            cursor.execute(f'SELECT EXISTS (SELECT 1 FROM "{TABLE}")')
            has_rows = cursor.fetchone()[0]
            if has_rows:
                _prepare(cursor, cutover)
        if _swap(connection, cutover=cutover, has_rows=has_rows):
            return


def _prepare(cursor, cutover) -> None:
    """Build what ATTACH needs on the old table without blocking its writes."""
    for name, definition in (
        (PK_INDEX, "UNIQUE INDEX CONCURRENTLY {} ON {} (id, started_at)"),
        (NUMBER_INDEX, "INDEX CONCURRENTLY {} ON {} (delivery_id, number)"),
    ):
        # An earlier try interrupted mid-build leaves an invalid index behind.
        cursor.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [name]
        )
        row = cursor.fetchone()
        if row and not row[0]:
            cursor.execute(f'DROP INDEX CONCURRENTLY "{name}"')
        if not row or not row[0]:
            cursor.execute("CREATE " + definition.format(f'"{name}"', f'"{TABLE}"'))
    _briefly(cursor, f'ALTER TABLE "{TABLE}" DROP CONSTRAINT IF EXISTS "{CHECK}"')
    _briefly(
        cursor,
        f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{CHECK}" '
        f"CHECK (started_at < '{cutover.isoformat()}') NOT VALID",
    )
    cursor.execute(f'ALTER TABLE "{TABLE}" VALIDATE CONSTRAINT "{CHECK}"')


def _briefly(cursor, sql: str) -> None:
    """Run a statement that needs a moment's ACCESS EXCLUSIVE lock, retrying."""
    for attempt in range(TRIES):
        try:
            with transaction.atomic(using=cursor.db.alias):
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", [LOCK_TIMEOUT])
                cursor.execute(sql)
            return
        except DatabaseError as exc:
            if not _lock_timeout(exc) or attempt == TRIES - 1:
                raise
            time.sleep(1)


def _swap(connection, *, cutover, has_rows: bool) -> bool:
    """Replace the table by the partitioned one in one short transaction.

    False when the table's rows changed from none to some meanwhile (prepare it
    and try again).
    """
    for attempt in range(TRIES):
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as c:
                c.execute("SELECT set_config('lock_timeout', %s, true)", [LOCK_TIMEOUT])
                # Writers lock a delivery before its attempts: the same order.
                c.execute(f'LOCK TABLE "{DELIVERIES}" IN SHARE ROW EXCLUSIVE MODE')
                c.execute(f'LOCK TABLE "{TABLE}" IN ACCESS EXCLUSIVE MODE')
                c.execute(f'SELECT EXISTS (SELECT 1 FROM "{TABLE}")')
                if c.fetchone()[0] != has_rows:
                    return False
                _swap_locked(c, cutover=cutover, has_rows=has_rows)
            return True
        except DatabaseError as exc:
            if not _lock_timeout(exc) or attempt == TRIES - 1:
                raise
            time.sleep(1)
    return False


def _swap_locked(c, *, cutover, has_rows: bool) -> None:
    c.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass "
        "AND contype = 'f'",
        [TABLE],
    )
    (foreign_key,) = c.fetchone()
    c.execute("SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
    (sequence,) = c.fetchone()
    c.execute(f'ALTER TABLE "{TABLE}" RENAME TO "{LEGACY}"')
    c.execute(f'ALTER SEQUENCE {sequence} RENAME TO "{LEGACY}_id_seq"')
    # Their names (index names are the schema's) go to the partitioned table.
    c.execute(f'ALTER TABLE "{LEGACY}" DROP CONSTRAINT "{TABLE}_pkey"')
    c.execute(f'ALTER TABLE "{LEGACY}" DROP CONSTRAINT "{INDEX}"')
    c.execute(
        f'CREATE TABLE "{TABLE}" (LIKE "{LEGACY}" INCLUDING IDENTITY) '
        "PARTITION BY RANGE (started_at)"
    )
    c.execute(
        f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{TABLE}_pkey" '
        "PRIMARY KEY (id, started_at)"
    )
    c.execute(f'CREATE INDEX "{INDEX}" ON "{TABLE}" (delivery_id, number)')
    c.execute(
        f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{foreign_key}" FOREIGN KEY '
        f'(delivery_id) REFERENCES "{DELIVERIES}" (id) DEFERRABLE INITIALLY DEFERRED'
    )
    c.execute(f'CREATE TABLE "{DEFAULT}" PARTITION OF "{TABLE}" DEFAULT')
    # Ids go on from where the old table's identity was.
    c.execute(
        "SELECT setval(pg_get_serial_sequence(%s, 'id'), nextval(%s))",
        [TABLE, f"{LEGACY}_id_seq"],
    )
    if not has_rows:
        c.execute(f'DROP TABLE "{LEGACY}"')
        return
    c.execute(
        f'ALTER TABLE "{LEGACY}" ADD CONSTRAINT "{LEGACY}_pkey" '
        f'PRIMARY KEY USING INDEX "{PK_INDEX}"'
    )
    c.execute(
        f'ALTER TABLE "{TABLE}" ATTACH PARTITION "{LEGACY}" '
        f"FOR VALUES FROM (MINVALUE) TO ('{cutover.isoformat()}')"
    )
    c.execute(f'ALTER TABLE "{LEGACY}" DROP CONSTRAINT "{CHECK}"')


def unpartition(apps, schema_editor) -> None:
    """Back to one plain table, every row copied under lock (offline)."""
    connection = schema_editor.connection
    with transaction.atomic(using=connection.alias), connection.cursor() as c:
        c.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass "
            "AND contype = 'f' AND conparentid = 0",
            [TABLE],
        )
        (foreign_key,) = c.fetchone()
        c.execute(f'LOCK TABLE "{DELIVERIES}" IN SHARE ROW EXCLUSIVE MODE')
        c.execute(f'LOCK TABLE "{TABLE}" IN ACCESS EXCLUSIVE MODE')
        c.execute(f'CREATE TABLE "{TABLE}_plain" (LIKE "{TABLE}" INCLUDING IDENTITY)')
        c.execute(f'INSERT INTO "{TABLE}_plain" SELECT * FROM "{TABLE}"')
        c.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), "
            "nextval(pg_get_serial_sequence(%s, 'id')))",
            [f"{TABLE}_plain", TABLE],
        )
        c.execute("SELECT pg_get_serial_sequence(%s, 'id')", [f"{TABLE}_plain"])
        (sequence,) = c.fetchone()
        c.execute(f'DROP TABLE "{TABLE}"')
        c.execute(f'ALTER TABLE "{TABLE}_plain" RENAME TO "{TABLE}"')
        c.execute(f'ALTER SEQUENCE {sequence} RENAME TO "{TABLE}_id_seq"')
        c.execute(f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{TABLE}_pkey" PRIMARY KEY (id)')
        c.execute(
            f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{INDEX}" '
            "UNIQUE (delivery_id, number)"
        )
        c.execute(
            f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{foreign_key}" FOREIGN KEY '
            f'(delivery_id) REFERENCES "{DELIVERIES}" (id) '
            "DEFERRABLE INITIALLY DEFERRED"
        )


def _lock_timeout(exc: DatabaseError) -> bool:
    return isinstance(exc.__cause__, psycopg.errors.LockNotAvailable)


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY and VALIDATE outside any transaction; the swap
    # makes its own.
    atomic = False

    dependencies = [
        ("deliveries", "0011_delivery_parked_at"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(partition, unpartition)],
            state_operations=[
                migrations.RemoveConstraint(
                    model_name="deliveryattempt", name="attempt_delivery_number"
                ),
                migrations.AddIndex(
                    model_name="deliveryattempt",
                    index=models.Index(
                        fields=["delivery", "number"], name="attempt_delivery_number"
                    ),
                ),
            ],
        ),
    ]
