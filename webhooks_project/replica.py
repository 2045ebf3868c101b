"""Reads that tolerate replication lag, served by the PostgreSQL replica if any.

`DATABASE_REPLICA_URL` adds the `replica` alias (settings.py). Only the callers
that pass their read through `read_lag_tolerant` use it: the dashboard's figures
and the API's paginated lists of events, deliveries, dead letters and attempts,
heavy reads whose rows may be a second old. Everything else stays on the primary:
API-key and session authentication, writes and the reads inside them (replays,
retries), idempotency lookups, the engine's claims, records and sweeps, and one
object fetched by id, which a client often asks for right after creating it.

Why the call sites choose and not a database router: a router decides by model,
but the same Delivery query tolerates lag in a list and must be current in a
replay or a claim. Only the caller knows which, and a reader sees it there.

Why a fallback: a lag-tolerant read must not turn a healthy primary into errors.
A replica that is down, unreachable, or that cancels a query (a conflict with
recovery) raises OperationalError or InterfaceError; the read then runs again
on the primary, logged and counted (`webhook_replica_fallbacks_total`). Each
read tries the replica first again: a replica that refuses costs a failed
connect, one that does not answer at most its `connect_timeout`.
"""

import logging
from collections.abc import Callable
from typing import TypeVar

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections

from webhooks_project.metrics import REPLICA_FALLBACKS

logger = logging.getLogger(__name__)

REPLICA = "replica"
T = TypeVar("T")


def read_lag_tolerant(read: Callable[[str], T]) -> T:
    """`read(alias)` on the replica when one is configured, else on the primary;
    on the primary again when the replica fails.

    `read` must evaluate its queries itself (a lazy queryset returned would be
    read after the fallback could catch its failure) and write nothing.
    """
    if REPLICA not in connections.settings:
        return read(DEFAULT_DB_ALIAS)
    try:
        return read(REPLICA)
    except (OperationalError, InterfaceError) as exc:
        logger.warning("replica read failed, reading the primary instead: %s", exc)
        REPLICA_FALLBACKS.inc()
        return read(DEFAULT_DB_ALIAS)
