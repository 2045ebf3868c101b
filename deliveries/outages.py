"""The one policy for a database that does not answer: back off, try again, jitter.

Whoever meets an outage waits `outage_delay(tries)` before the next try: the
delivery task (a Celery retry of its message), the engine's admission (the
batch's messages published again with that countdown) and the engine's
recording (its thread sleeps). The delivery's lease and the sweep cover anything
that still slips through.
"""

import random
import threading
import time

from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)

# What an outage raises (a connection refused or dropped, a server gone).
DATABASE_ERRORS = (OperationalError, InterfaceError)
# Longest wait between two tries, in seconds.
OUTAGE_DELAY_MAX = 60.0


def outage_delay(tries: int) -> float:
    """Seconds to wait after `tries` failed tries: 2, 4, 8 ... up to a minute,
    each between half and all of it, so that many waiters do not come back at
    once."""
    ceiling = min(OUTAGE_DELAY_MAX, 2.0 ** (tries + 1))
    return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 (not a secret)


_tended = threading.local()
# How often a long-lived thread looks at its database connection (seconds).
TEND_INTERVAL = 1.0


def tend_connection() -> None:
    """Drop this thread's connection if broken or past CONN_MAX_AGE.

    What Django does around each web request, for the engine's long-lived
    threads, but at most once a second: its health check is a round trip of its
    own, which every batch would pay. A connection that failed is dropped at once.
    """
    now = time.monotonic()
    if connection.errors_occurred or now - getattr(_tended, "at", 0.0) >= TEND_INTERVAL:
        _tended.at = now
        close_old_connections()
