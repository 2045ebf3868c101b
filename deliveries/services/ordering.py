"""Ordered delivery per key: a line's deliveries go one at a time, in sequence.

A *line* is (endpoint, ordering key). Every delivery of a keyed event carries
the key and a *sequence*, a number from the deliveries_ordering_seq sequence
taken when the event is stored, so that an event published after another's 202
has the larger number in every line it joins. The state is rows in PostgreSQL
only, so it holds across worker crashes, restarts, hosts and retries hours apart:

- *Ahead* of a delivery is any open delivery of its line with a smaller
  sequence, and any other of its line in progress (a replayed dead letter waits
  for the attempt under way). A claim takes a keyed delivery only when nothing
  is ahead of it (`ahead_sql`), so a line goes in sequence order; the unique
  index delivery_line_in_progress makes "one attempt of a line at a time" hold
  even when claims race. Unkeyed deliveries are not looked at.
- A keyed delivery a claim left because something was ahead is *parked*
  (`parked_at`): no message, a waiting lease PARK_RECHECK ahead, longer the
  longer it has waited, up to PARK_RECHECK_MAX (`deliveries_park`).
- When a delivery of a line leaves in_progress (it ends, fails, is postponed,
  or its worker is found lost), the same transaction, or the next, publishes
  the line's first open delivery if it is parked and nothing is ahead of it
  (`lines_release`); parking checks again, after its own commit, whether what
  was ahead has moved on meanwhile (`parked_release`). Both take the line's
  advisory lock first, so whichever comes second sees the other's commit: a
  parked delivery is not left without somebody to publish it.
- The recheck is the net under that: the sweep publishes a parked delivery
  whose lease passed, and the claim parks it again if its line still waits.
"""

from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from deliveries.leases import queued_lease, waiting_sql
from deliveries.models import OPEN_STATUSES, Delivery, DeliveryStatus
from deliveries.services.enqueue import deliveries_enqueue_on_commit
from webhooks_project.rawsql import not_by_index, prepared, uuid_array

# Named once for the migration that creates it and the statements that use it.
SEQUENCE = "deliveries_ordering_seq"
# How long a parked delivery waits before the sweep looks at it again, should
# the publish that ends its wait be lost (a worker killed between the commit
# that ended the delivery ahead and its publish): as long as it has waited so
# far, at least PARK_RECHECK and at most PARK_RECHECK_MAX, so that a line held
# for hours costs the sweep little.
PARK_RECHECK = timedelta(minutes=10)
PARK_RECHECK_MAX = timedelta(hours=1)

_TABLE = Delivery._meta.db_table
_OPEN = ", ".join(f"'{status}'" for status in OPEN_STATUSES)
_IN_PROGRESS = f"'{DeliveryStatus.IN_PROGRESS}'"
_WAITING = f"'{DeliveryStatus.PENDING}', '{DeliveryStatus.FAILED}'"


def sequence_sql(key: str) -> str:
    """SQL of a new sequence number if `key` (SQL of an ordering key) is set."""
    return f"CASE WHEN {key} IS NOT NULL THEN nextval('{SEQUENCE}') END"


def ahead_sql(alias: str = "d") -> str:
    """SQL true when a delivery of `alias`'s line must go before `alias`.

    An open one earlier in sequence (a range of the partial index
    delivery_open_line), or another in progress (delivery_line_in_progress).
    False for an unkeyed delivery.
    """
    line = (
        f'a."endpoint_id" = {alias}."endpoint_id" '
        f'AND a."ordering_key" = {alias}."ordering_key"'
    )
    return f"""({alias}."ordering_key" IS NOT NULL AND (
        EXISTS (SELECT 1 FROM "{_TABLE}" AS a WHERE {line}
                AND a."sequence" < {alias}."sequence" AND a."status" IN ({_OPEN}))
        OR EXISTS (SELECT 1 FROM "{_TABLE}" AS a WHERE {line}
                   AND a."status" = {_IN_PROGRESS} AND a."id" <> {alias}."id")))"""  # noqa: S608


def deliveries_park(*, delivery_ids: list, due) -> set:
    """Park the keyed deliveries of `delivery_ids` a claim left though due.

    The claim left them because something was ahead of them (or somebody
    claimed them first: those are in progress and not touched). Their messages
    are gone once the caller acknowledges them, so they get a waiting lease.
    Then whatever ended ahead of them meanwhile is seen (`parked_release`).
    Returns the ids parked. `due`: the claim's due bound (its DUE_TOLERANCE).
    """
    if not delivery_ids:
        return set()
    with prepared(
        _PARK_SQL,
        {
            "ids": uuid_array(delivery_ids),
            "now": timezone.now(),
            "due": due,
            "recheck": PARK_RECHECK,
            "recheck_max": PARK_RECHECK_MAX,
            "pending": DeliveryStatus.PENDING,
            "failed": DeliveryStatus.FAILED,
        },
    ) as cursor:
        parked = cursor.fetchall()
    if parked:
        parked_release(parked)
    return {row[0] for row in parked}


# A waiting lease (leases.waiting_lease: due = lease) as far ahead as the row
# has been parked, within [recheck, recheck_max].
_RECHECK = """%(now)s + LEAST(%(recheck_max)s, GREATEST(%(recheck)s,
    %(now)s - COALESCE(d."parked_at", %(now)s)))"""
_PARK_SQL = f"""
    UPDATE "{_TABLE}" AS d
    SET "next_attempt_at" = {_RECHECK}, "lease_expires_at" = {_RECHECK},
        "parked_at" = COALESCE(d."parked_at", %(now)s), "updated_at" = %(now)s
    WHERE d."id" = ANY(%(ids)s::uuid[]) AND d."ordering_key" IS NOT NULL
      AND d."status" IN (%(pending)s, %(failed)s)
      AND (d."next_attempt_at" IS NULL OR d."next_attempt_at" <= %(due)s)
      AND (d."expires_at" IS NULL OR d."expires_at" > %(now)s)
    RETURNING d."id", d."endpoint_id", d."ordering_key"
"""  # noqa: S608


def parked_release(parked: list[tuple]) -> list:
    """Publish those of `parked` (id, endpoint id, key) with nothing ahead now.

    After the line locks, so that a delivery ahead that ended before is seen,
    and one ending after sees these parked (`lines_release`).
    """
    return _released(
        _PARKED_RELEASE_SQL,
        lines={(endpoint, key) for _, endpoint, key in parked},
        ids=[delivery_id for delivery_id, _, _ in parked],
    )


# A parked delivery (still without a message: leases.waiting_sql) with nothing
# ahead: checked row by row, after the lookup by id. A failing delivery waiting
# for its next retry is not parked: its wait is its own.
_FREE = not_by_index(
    f'd."parked_at" IS NOT NULL AND d."status" IN ({_WAITING}) '
    f"AND {waiting_sql('d')} AND NOT {ahead_sql('d')}"
)
# Both releases lock their rows with SKIP LOCKED: whoever holds a parked row
# (a claim, a release, the expiry, a replay) moves it on itself, and a release
# that holds line locks never waits for a row lock (no deadlock with those that
# hold rows and wait for a line).
_RELEASE_SQL = f"""
    UPDATE "{_TABLE}" AS d
    SET "next_attempt_at" = %(now)s, "lease_expires_at" = %(lease)s,
        "parked_at" = NULL, "updated_at" = %(now)s
    FROM free WHERE d."id" = free."id"
    RETURNING d."id", d."endpoint_id"
"""  # noqa: S608

_PARKED_RELEASE_SQL = f"""
    WITH free AS (
        SELECT d."id" FROM "{_TABLE}" AS d
        WHERE d."id" = ANY(%(ids)s::uuid[]) AND {_FREE}
        FOR UPDATE SKIP LOCKED
    ){_RELEASE_SQL}"""  # noqa: S608


def lines_release(lines: set[tuple]) -> list:
    """After deliveries of `lines` (endpoint id, key) left in_progress: go on.

    Each line's first open delivery in sequence is published if it is parked
    and nothing of its line is in progress. Call it in the transaction that
    moved them (the publish goes on commit), or right after it. Returns the
    ids published. Pairs with None keys (unkeyed deliveries) are ignored.
    """
    lines = {(endpoint, key) for endpoint, key in lines if key is not None}
    if not lines:
        return []
    return _released(_LINES_RELEASE_SQL, lines=lines)


_LINES_RELEASE_SQL = f"""
    WITH next AS (
        SELECT (
            SELECT a."id" FROM "{_TABLE}" AS a
            WHERE a."endpoint_id" = l.endpoint_id AND a."ordering_key" = l.key
              AND a."status" IN ({_OPEN})
            ORDER BY a."sequence" LIMIT 1) AS "id"
        FROM unnest(%(endpoints)s::uuid[], %(keys)s::varchar[]) AS l(endpoint_id, key)
    ), free AS (
        SELECT d."id" FROM "{_TABLE}" AS d JOIN next ON d."id" = next."id"
        WHERE {_FREE}
        FOR UPDATE OF d SKIP LOCKED
    ){_RELEASE_SQL}"""  # noqa: S608


def _released(sql: str, *, lines: set[tuple], ids: list | None = None) -> list:
    """Run a release statement under the line locks; publish on commit."""
    endpoints, keys = zip(*sorted(lines, key=str), strict=True)
    now = timezone.now()
    # Within the caller's transaction if there is one (no savepoint needed).
    with transaction.atomic(savepoint=False):
        _lines_lock(endpoints, keys)
        with prepared(
            sql,
            {
                "ids": uuid_array(ids or []),
                "endpoints": uuid_array(endpoints),
                "keys": list(keys),
                "now": now,
                "lease": queued_lease(now),
            },
        ) as cursor:
            released = cursor.fetchall()
        # The shared queue for fresh deliveries: they waited for their turn,
        # not for a retry, and a hot key goes at its receiver's pace.
        deliveries_enqueue_on_commit(released)
    return [delivery_id for delivery_id, _ in released]


def _lines_lock(endpoints, keys) -> None:
    """Take the lines' advisory locks until the transaction ends, in one order."""
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT pg_advisory_xact_lock(h) FROM (
                SELECT DISTINCT hashtextextended(e::text || ':' || k, 0) AS h
                FROM unnest(%s::uuid[], %s::varchar[]) AS l(e, k) ORDER BY h) AS s""",
            [uuid_array(endpoints), list(keys)],
        )
