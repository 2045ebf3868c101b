"""The one reader of what flow control decided: who refuses, and who is isolated.

The gate (deliveries.flow.gate) is the one writer of "this endpoint refuses every
delivery until T" (its circuit is open, its receiver paused it, its requests
hang); engines and publishers mark endpoints isolated (deliveries.flow.isolation).
Ingestion (new deliveries of a refusing endpoint are written due when the
refusal ends, unpublished), the sweep (its due rows wait too), the delivery engine
(it postpones, unclaimed, the messages of a refusing endpoint) and the publisher
(an isolated endpoint's fresh deliveries go to its own queue) all read both facts
here: one pipelined Redis read per process at most every REFUSALS_LIFETIME
seconds, on Redis's clock turned into this machine's, so skew between machines
does not matter. What a process learns itself (a refusal its engine just met, a
probe that closed a circuit) is in its own reading at once.

Fails open: without Redis, nothing refuses and nothing is isolated.
"""

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from django.utils import timezone

from webhooks_project.queues import QUEUE_PREFIX
from webhooks_project.redis_client import get_redis

logger = logging.getLogger(__name__)

# Endpoints that refuse every delivery for now (circuit open or half-open with
# its probe out, paused by the receiver, hanging), scored by until when (ms on
# Redis's clock). Written by the gate's scripts only.
REFUSING_SET = "fc:refusing"
# Isolated endpoints, scored by until when (epoch seconds). Written by
# deliveries.flow.isolation.
ISOLATED_KEY = f"{QUEUE_PREFIX}webhooks:endpoint-queues:isolated"
# How long a process trusts its reading, in seconds: a refusal that ended
# meanwhile holds a new delivery until it would have ended, at most this long.
REFUSALS_LIFETIME = 1.0


@dataclass
class Reading:
    """The refusing endpoints (until when, this machine's clock) and isolated ones."""

    refusing: dict[str, datetime] = field(default_factory=dict)
    isolated: frozenset[str] = frozenset()
    read_at: float = float("-inf")  # monotonic
    # The refusing endpoints by tenant, worked out once per reading.
    by_tenant: dict[str, dict[str, datetime]] | None = None


class _Refusals:
    """This process's reading, refreshed when older than REFUSALS_LIFETIME."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reading = Reading()
        self._failing = False

    def current(self, *, fresh: bool = False) -> Reading:
        reading = self._reading
        if not fresh and time.monotonic() - reading.read_at < REFUSALS_LIFETIME:
            return reading
        with self._lock:
            if fresh or time.monotonic() - self._reading.read_at >= REFUSALS_LIFETIME:
                self._reading = self._read()
            return self._reading

    def _read(self) -> Reading:
        try:
            pipe = get_redis().pipeline(transaction=False)
            pipe.time()
            pipe.zrange(REFUSING_SET, 0, -1, withscores=True)
            pipe.zrange(ISOLATED_KEY, 0, -1, withscores=True)
            (seconds, micros), refusing, isolated = pipe.execute()
        except redis.RedisError as exc:
            if not self._failing:
                logger.warning("refusals unknown, Redis unavailable: %s", exc)
            self._failing = True
            return Reading(read_at=time.monotonic())
        self._failing = False
        now_ms = seconds * 1000 + micros // 1000
        here = timezone.now()
        found = {
            _text(member): here + timedelta(milliseconds=until_ms - now_ms)
            for member, until_ms in refusing
            if until_ms > now_ms
        }
        # Isolation is scored in epoch seconds; Redis's clock decides.
        now_s = now_ms / 1000
        still = frozenset(_text(m) for m, until in isolated if until > now_s)
        if len(found) < len(refusing) or len(still) < len(isolated):
            _trim(now_ms)
        return Reading(refusing=found, isolated=still, read_at=time.monotonic())

    def note(self, endpoint_id: str, until: datetime) -> None:
        with self._lock:
            reading = self._reading
            known = reading.refusing.get(endpoint_id)
            if known is None or until > known:
                refusing = {**reading.refusing, endpoint_id: until}
                self._reading = Reading(refusing, reading.isolated, reading.read_at)

    def cleared(self, endpoint_ids) -> None:
        with self._lock:
            reading = self._reading
            gone = {str(e) for e in endpoint_ids}
            refusing = {e: u for e, u in reading.refusing.items() if e not in gone}
            self._reading = Reading(refusing, reading.isolated - gone, reading.read_at)

    def forget(self) -> None:
        with self._lock:
            self._reading = Reading()


_refusals = _Refusals()


def refusing(*, fresh: bool = False) -> dict[str, datetime]:
    """Endpoints that refuse every delivery for now, and until when.

    `fresh`: read now (the sweep, which acts on whole backlogs, every few
    seconds), not a reading up to REFUSALS_LIFETIME old.
    """
    return _refusals.current(fresh=fresh).refusing


def refusing_for_tenant(tenant_id) -> dict[str, datetime]:
    """The tenant's endpoints that refuse every delivery, and until when.

    Ingestion asks on every event: the endpoints' tenants are read from
    PostgreSQL once per reading.
    """
    reading = _refusals.current()
    if reading.by_tenant is None:
        reading.by_tenant = _by_tenant(reading.refusing)
    return reading.by_tenant.get(str(tenant_id), {})


def isolated() -> frozenset[str]:
    """Endpoints whose fresh deliveries go to a queue of their own."""
    return _refusals.current().isolated


def note_refusal(endpoint_id, until: datetime) -> None:
    """This process met a refusal until `until`: its reading has it at once."""
    _refusals.note(str(endpoint_id), until)


def note_recovered(endpoint_ids) -> None:
    """These endpoints take deliveries again (a probe succeeded, a reset)."""
    _refusals.cleared(endpoint_ids)


def forget() -> None:
    """Read afresh on the next ask (tests, and after a change made here)."""
    _refusals.forget()


def _by_tenant(refusing: dict[str, datetime]) -> dict[str, dict[str, datetime]]:
    from subscriptions.models import Endpoint

    ids = []
    for endpoint_id in refusing:
        with contextlib.suppress(ValueError):  # not one of ours
            ids.append(uuid.UUID(endpoint_id))
    by_tenant: dict[str, dict[str, datetime]] = {}
    if ids:
        owners = Endpoint.objects.filter(pk__in=ids).values_list("pk", "tenant_id")
        for endpoint_id, tenant_id in owners:
            until = refusing[str(endpoint_id)]
            by_tenant.setdefault(str(tenant_id), {})[str(endpoint_id)] = until
    return by_tenant


def _trim(now_ms: int) -> None:
    """Drop passed entries (by score: one a script moved on meanwhile stays)."""
    with contextlib.suppress(redis.RedisError):
        pipe = get_redis().pipeline(transaction=False)
        pipe.zremrangebyscore(REFUSING_SET, "-inf", now_ms)
        pipe.zremrangebyscore(ISOLATED_KEY, "-inf", f"({now_ms / 1000}")
        pipe.execute()


def _text(member) -> str:
    return member.decode() if isinstance(member, bytes) else member
