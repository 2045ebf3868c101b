"""A delivery row's lease: when the sweep may publish it again, and what it means.

Every open row (pending, failed, in progress) has a lease; final rows have none.
An open row is in one of two queue states, told apart by its lease alone:
- *queued*: a message of it may exist (in a queue, in RabbitMQ's delayed
  delivery, in a worker's hands). Its lease is a while after it is due
  (`queued_lease`), and the sweep publishes it again only if that message seems
  lost (the lease passed and no backlog explains it).
- *waiting*: no message exists; the row waits in PostgreSQL (a long retry, a
  delivery deferred while its endpoint refuses, one whose publish failed). Its
  lease is its due time (`waiting_lease`), and the sweep publishes it then.

In progress, the lease is the attempt's deadline plus a margin (`attempt_lease`):
past it, the worker counts as lost. This module is the one place that writes and
reads that encoding, for Python and for the SQL statements.
"""

from datetime import datetime, timedelta

from django.conf import settings


def queued_lease(due: datetime) -> datetime:
    """The lease of a row whose message may exist, due at `due`."""
    return due + timedelta(seconds=settings.WEBHOOK_QUEUE_LEASE_SECONDS)


def waiting_lease(due: datetime) -> datetime:
    """The lease of a row with no message, due at `due`: the sweep publishes it then."""
    return due


def lease_for(*, due: datetime, queued: bool) -> datetime:
    """`queued_lease` or `waiting_lease`."""
    return queued_lease(due) if queued else waiting_lease(due)


def attempt_lease(now: datetime) -> datetime:
    """The lease of a row claimed at `now`: its attempt's deadline and a margin."""
    return now + timedelta(
        seconds=settings.WEBHOOK_CONNECT_TIMEOUT
        + settings.WEBHOOK_RESPONSE_TIMEOUT
        + settings.WEBHOOK_PROGRESS_LEASE_MARGIN
    )


def is_queued(*, due: datetime | None, lease: datetime | None) -> bool:
    """Whether a message of this open (pending or failed) row may exist."""
    return lease is not None and lease != due


def waiting_sql(alias: str = "") -> str:
    """SQL that is true for a row in the waiting state (`alias`: its table's)."""
    prefix = f"{alias}." if alias else ""
    return f'{prefix}"lease_expires_at" = {prefix}"next_attempt_at"'
