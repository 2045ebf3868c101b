"""Weekly partitions of the attempts table: created ahead, dropped past the horizon.

`deliveries_deliveryattempt` is partitioned by RANGE (started_at), one partition
per UTC week (Monday to Monday), named `deliveries_deliveryattempt_pYYYYMMDD`
after its first day, plus:

- a DEFAULT partition, the safety net: a row whose week has no partition (beat
  stopped for weeks, a clock far off) still inserts. Creating a week's
  partition moves such rows out of it first, so it normally stays empty and the
  scan ATTACH makes of it costs nothing;
- after the online conversion of a database that had rows, `..._legacy`: the old
  table, holding every row started before the cutover (migration 0012).

A week, not a day: every lookup by delivery id that cannot name a week (the
foreign key's check when a delivery is deleted, a delivery's attempt list)
probes each partition's index. Measured on 2 M rows, deleting 20,000
deliveries: 0.27 s unpartitioned, 0.89 s with 7 partitions, 2.7 s with 41
(daily over the default horizon). A week also keeps a tenant's year-long
retention at 53 partitions, and a dropped partition is at most a week older than
the horizon.

The horizon is how long every attempt must be kept at least: the longest of
WEBHOOK_RETENTION_DAYS (dead letters' logs after dead-lettering), the longest
tenant retention (events and their expired deliveries), and
WEBHOOK_LOG_RETENTION_HOURS (succeeded deliveries' logs), plus one round of
retries. A partition whose range ended before it is dropped whole; the row-level
deletes (the attempt-log cleanup, the retention purge) still apply to every row
before that. What a drop removes early, the attempts of a delivery whose life is
longer than one round (replayed, retried by hand), is documented in
docs/operations.md ("Attempt partitions").

Every DDL statement runs in its own short transaction under `lock_timeout`: a
create or a drop never waits long behind traffic (nor makes traffic wait long
behind it); one that gives up is tried again on the next run.
"""

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg.errors
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from deliveries import retry
from deliveries.models import DeliveryAttempt
from tenants.models import MAX_RETENTION_DAYS, Tenant

logger = logging.getLogger(__name__)

TABLE = DeliveryAttempt._meta.db_table
DEFAULT_PARTITION = f"{TABLE}_default"
WEEK = timedelta(days=7)
# Partitions exist this far ahead of now: two weeks of beat outage before rows
# fall into the default partition.
AHEAD = timedelta(days=14)
# How long a create or drop waits for its locks before giving up for this run.
# A DROP waits for an ACCESS EXCLUSIVE lock on the table, and every statement on
# attempts queues behind it meanwhile: this is the longest stall it can cause.
LOCK_TIMEOUT = "500ms"


class PartitionMaintenanceIncomplete(DatabaseError):
    """Some create or drop gave up on a lock this run (the next run retries)."""


@dataclass(frozen=True)
class Partition:
    """One partition and its range (None: MINVALUE, or the default partition's)."""

    name: str
    start: datetime | None
    end: datetime | None

    @property
    def is_default(self) -> bool:
        """Whether this is the DEFAULT partition (no range of its own)."""
        return self.name == DEFAULT_PARTITION


@dataclass
class MaintenanceResult:
    """Partitions created and dropped by one run, and those that gave up."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)


def week_start(moment: datetime) -> datetime:
    """Monday 00:00 UTC of `moment`'s week (PostgreSQL's date_trunc('week'))."""
    moment = moment.astimezone(UTC)
    day = moment - timedelta(days=moment.weekday())
    return day.replace(hour=0, minute=0, second=0, microsecond=0)


def partition_name(start: datetime) -> str:
    """The name of the partition of the week starting at `start`."""
    return f"{TABLE}_p{start:%Y%m%d}"


def attempts_partitioned() -> bool:
    """Whether the attempts table is partitioned (migration 0012 applied)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [TABLE])
        return cursor.fetchone()[0] == "p"


def attempt_partitions() -> list[Partition]:
    """Every partition of the attempts table, in range order (the default last)."""
    with connection.cursor() as cursor:
        cursor.execute(
            r"""
            SELECT c.relname,
                   (regexp_match(b.bound, 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
                   (regexp_match(b.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz
            FROM pg_inherits AS i
            JOIN pg_class AS c ON c.oid = i.inhrelid
            CROSS JOIN LATERAL pg_get_expr(c.relpartbound, c.oid) AS b(bound)
            WHERE i.inhparent = %s::regclass
            ORDER BY b.bound = 'DEFAULT', 3
            """,
            [TABLE],
        )
        return [Partition(*row) for row in cursor.fetchall()]


def attempt_retention_horizon() -> timedelta:
    """How long after it started every attempt must be kept, at least.

    The longest of the retention rules (see the module docstring) plus one
    round of retries: a round's last attempt, which starts the clock of the
    delivery's success or dead-lettering, may start that long after its first.
    """
    longest_tenant = Tenant.objects.aggregate(days=Max("retention_days"))["days"]
    days = min(
        max(settings.WEBHOOK_RETENTION_DAYS, longest_tenant or 0), MAX_RETENTION_DAYS
    )
    keep = max(
        timedelta(days=days), timedelta(hours=settings.WEBHOOK_LOG_RETENTION_HOURS)
    )
    round_seconds = sum(retry.schedule()) * (1 + settings.WEBHOOK_RETRY_JITTER)
    return keep + timedelta(days=math.ceil(round_seconds / 86_400))


def attempt_partitions_maintain(*, now: datetime | None = None) -> MaintenanceResult:
    """Create the weeks' partitions up to AHEAD, drop those past the horizon.

    Raises PartitionMaintenanceIncomplete, after trying every one, when some
    create or drop gave up on its lock: the run did not do all it had to.
    """
    now = timezone.now() if now is None else now
    result = attempt_partitions_create_ahead(now=now)
    cutoff = now - attempt_retention_horizon()
    for partition in attempt_partitions():
        if partition.is_default or partition.end is None or partition.end > cutoff:
            continue
        if _try(attempt_partition_drop, partition.name, result.gave_up):
            result.dropped.append(partition.name)
    if result.created or result.dropped:
        logger.info(
            "attempt partitions: created %s, dropped %s",
            ", ".join(result.created) or "none",
            ", ".join(result.dropped) or "none",
        )
    if result.gave_up:
        raise PartitionMaintenanceIncomplete(
            f"gave up on a lock for {', '.join(result.gave_up)}; the next run retries"
        )
    return result


def attempt_partitions_create_ahead(*, now: datetime) -> MaintenanceResult:
    """Create the partitions of every week from `now`'s to `now` + AHEAD that no
    partition covers yet (the legacy one may cover the first ones)."""
    result = MaintenanceResult()
    ranged = [p for p in attempt_partitions() if not p.is_default]
    start = week_start(now)
    while start < now + AHEAD:
        end = start + WEEK
        taken = any(
            (p.start is None or p.start < end) and p.end > start for p in ranged
        )
        if not taken and _try(attempt_partition_create, start, result.gave_up):
            result.created.append(partition_name(start))
        start = end
    return result


def attempt_partition_create(start: datetime) -> str:
    """Create and attach the partition of the week starting at `start`.

    CREATE TABLE + ATTACH rather than CREATE TABLE ... PARTITION OF: the latter
    locks the whole table ACCESS EXCLUSIVE, ATTACH only SHARE UPDATE EXCLUSIVE
    (reads and writes go on). Rows the default partition took for that week are
    moved into the new table first, with the default partition locked so that no
    more arrive there before ATTACH checks it holds none of the week.
    """
    name, end = partition_name(start), start + WEEK
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [LOCK_TIMEOUT])
        cursor.execute(f'LOCK TABLE "{DEFAULT_PARTITION}" IN EXCLUSIVE MODE')
        cursor.execute(f'CREATE TABLE "{name}" (LIKE "{TABLE}" INCLUDING DEFAULTS)')
        cursor.execute(
            f"""
            WITH moved AS (
                DELETE FROM "{DEFAULT_PARTITION}"
                WHERE "started_at" >= %(start)s AND "started_at" < %(end)s
                RETURNING *
            )
            INSERT INTO "{name}" SELECT * FROM moved
            """,  # noqa: S608 (identifiers from the model's metadata)
            {"start": start, "end": end},
        )
        cursor.execute(
            f'ALTER TABLE "{TABLE}" ATTACH PARTITION "{name}" '
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
    return name


def attempt_partition_drop(name: str) -> None:
    """Drop one partition whole (its rows, its indexes, no vacuum left to do).

    DROP TABLE on the attached partition, not DETACH first: a detached table's
    foreign key gets triggers of its own on deliveries, and dropping those then
    locks the deliveries table ACCESS EXCLUSIVE (DETACH CONCURRENTLY is not
    allowed beside a default partition anyway).
    """
    if name == DEFAULT_PARTITION:
        raise ValueError("the default partition is never dropped")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [LOCK_TIMEOUT])
        cursor.execute(f'DROP TABLE "{name}"')


def _try(ddl, argument, gave_up: list) -> bool:
    """Run `ddl(argument)`; False (noted in `gave_up`) when it gave up on a lock."""
    try:
        ddl(argument)
    except DatabaseError as exc:
        if not isinstance(exc.__cause__, psycopg.errors.LockNotAvailable):
            raise
        label = argument if isinstance(argument, str) else partition_name(argument)
        logger.warning("attempt partitions: %s gave up on a lock", label)
        gave_up.append(label)
        return False
    return True
