"""Recovery: what an endpoint missed in a time window, queued again or delivered now."""

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from deliveries.flow import refusals
from deliveries.leases import lease_for
from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.services.enqueue import deliveries_enqueue_on_commit
from deliveries.services.ordering import sequence_sql
from deliveries.services.platform_events import recipient_sql
from deliveries.services.replay import COUNT_CAP, dead_letters_replay
from deliveries.services.retention import tenant_retention
from subscriptions.matching import (
    RESERVED_PREFIX,
    filters_as_sql,
    payload_filter_sql,
)
from subscriptions.models import Endpoint
from subscriptions.services import EndpointInactive
from webhooks_project import metrics
from webhooks_project.ids import CLOCK_SLACK, UUID7_SQL, uuid7_floor
from webhooks_project.queues import RETRIES_QUEUE

logger = logging.getLogger(__name__)

# Deliveries written by one statement (and published together).
RECOVER_BATCH = 1000


@dataclass(frozen=True)
class RecoverResult:
    """What a recovery did: dead letters queued again, deliveries created, and
    how many of either a next call would still handle."""

    replayed: int
    created: int
    # Dead letters and missed events left for a next call (up to COUNT_CAP each).
    remaining: int

    def as_response(self) -> dict[str, int]:
        """The API's answer: `remaining` only when there is any."""
        answer = {"replayed": self.replayed, "created": self.created}
        if self.remaining:
            answer["remaining"] = self.remaining
        return answer


def endpoint_recover(
    *,
    endpoint: Endpoint,
    since: datetime,
    until: datetime | None = None,
    limit: int | None = None,
) -> RecoverResult:
    """Give `endpoint` what it missed of the events created in [since, until).

    Its dead-lettered deliveries of those events are queued again (oldest dead
    letter first), then the tenant's events of the window that match it (event
    types, consumer and payload filter, as they are now) but never had a
    delivery to it get one, oldest first.
    At most `limit` (default WEBHOOK_REPLAY_MAX) in all: `remaining` says what
    a next call would do. A second call creates nothing new (one delivery per
    event and endpoint). Raises EndpointInactive for a disabled endpoint.
    """
    if not endpoint.is_active:
        raise EndpointInactive("The endpoint is disabled; enable it first.")
    limit = settings.WEBHOOK_REPLAY_MAX if limit is None else limit
    until = timezone.now() if until is None else until
    if until <= since:
        return RecoverResult(replayed=0, created=0, remaining=0)
    replay = dead_letters_replay(
        queryset=_dead_letters(endpoint=endpoint, since=since, until=until),
        limit=limit,
    )
    # Events about to reach their retention are left to the purge: a delivery
    # created for one it deletes meanwhile would fail this call's commit.
    kept_from = timezone.now() - tenant_retention(endpoint.tenant) + RETENTION_MARGIN
    window = _Window(endpoint=endpoint, since=max(since, kept_from), until=until)
    created = window.deliver(budget=limit - replay.replayed)
    remaining = replay.remaining
    if replay.replayed + created >= limit:
        remaining += window.missed_count()
    if replay.replayed or created:
        logger.info(
            "endpoint %s recovered: %d replayed, %d created",
            endpoint.pk,
            replay.replayed,
            created,
            extra={"tenant_id": endpoint.tenant_id, "endpoint_id": endpoint.pk},
        )
    return RecoverResult(replayed=replay.replayed, created=created, remaining=remaining)


# How far inside its retention an event must be for recovery to create a
# delivery of it.
RETENTION_MARGIN = timedelta(hours=1)


def _dead_letters(
    *, endpoint: Endpoint, since: datetime, until: datetime
) -> QuerySet[Delivery]:
    """The endpoint's deliveries of events created in [since, until).

    A delivery is made after its event, so its id is at least the window's
    start: the (endpoint, -id) index skips the endpoint's older deliveries.
    """
    return Delivery.objects.filter(
        endpoint=endpoint,
        pk__gte=uuid7_floor(since, shift=-CLOCK_SLACK),
        event__created_at__gte=since,
        event__created_at__lt=until,
    )


@dataclass(frozen=True)
class _Window:
    """The tenant's events of [since, until) that `endpoint` wants but never had."""

    endpoint: Endpoint
    since: datetime
    until: datetime

    def deliver(self, *, budget: int) -> int:
        """Create (and enqueue on commit) up to `budget` of their deliveries."""
        held_until = refusals.refusing_for_tenant(self.endpoint.tenant_id).get(
            str(self.endpoint.pk)
        )
        created = 0
        while created < budget:
            batch = min(RECOVER_BATCH, budget - created)
            now = timezone.now()
            due = held_until or now
            params = {
                **self._params(),
                "batch": batch,
                "now": now,
                "due": due,
                "lease": lease_for(due=due, queued=held_until is None),
                "pending": DeliveryStatus.PENDING,
            }
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(recover_sql(), params)
                rows = cursor.fetchall()
                if held_until is None:
                    # Many at once, like replays: not ahead of fresh events.
                    deliveries_enqueue_on_commit(rows, queue=RETRIES_QUEUE)
                elif rows:
                    held = metrics.DELIVERIES_POSTPONED.labels(reason="held")
                    transaction.on_commit(functools.partial(held.inc, len(rows)))
            created += len(rows)
            if len(rows) < batch:
                break
        return created

    def missed_count(self) -> int:
        """How many such events are left (counted up to COUNT_CAP)."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT count(*) FROM ({_missed_sql()} LIMIT %(cap)s) AS missed",  # noqa: S608
                {**self._params(), "cap": COUNT_CAP},
            )
            return cursor.fetchone()[0]

    def _params(self) -> dict:
        exacts, prefixes = filters_as_sql(self.endpoint.event_types)
        return {
            "tenant": self.endpoint.tenant_id,
            "endpoint": self.endpoint.pk,
            "consumer": self.endpoint.consumer,
            "since": self.since,
            "until": self.until,
            "low": uuid7_floor(self.since, shift=-CLOCK_SLACK),
            "high": uuid7_floor(self.until, shift=CLOCK_SLACK),
            "all_types": not exacts and not prefixes,
            "exacts": exacts,
            "prefixes": prefixes,
            "reserved": RESERVED_PREFIX,
            "now": timezone.now(),
        }


@functools.cache
def _missed_sql() -> str:
    event, delivery = Event._meta.db_table, Delivery._meta.db_table
    endpoint = Endpoint._meta.db_table
    # The same events as the fan-out would have given this endpoint: of its
    # types (every type, an exact one, or a `prefix.*`), and without a
    # consumer or of the endpoint's; platform events by their own rule
    # (never about this endpoint, never to a `*` filter); and passing its
    # payload filter (read from its row, compiled). The id range keeps the
    # scan on the (tenant, -id) index, within the window.
    wanted = f"""CASE WHEN starts_with(ev."event_type", %(reserved)s) THEN EXISTS (
                  SELECT 1 FROM "{endpoint}" AS ep
                  WHERE ep."id" = %(endpoint)s
                    AND {recipient_sql(ep="ep", ev="ev")})
              ELSE (%(all_types)s
                    OR ev."event_type" = ANY(%(exacts)s::varchar[])
                    OR ev."event_type" LIKE ANY(%(prefixes)s::varchar[]))
                   AND (ev."consumer" IS NULL
                        OR ev."consumer" = %(consumer)s::varchar)
              END"""  # noqa: S608
    passes = payload_filter_sql(
        endpoint="target", payload='ev."payload"', wanted=wanted
    )
    # An event past its expiry is not delivered any more.
    return f"""
        SELECT ev."id", ev."expires_at", ev."ordering_key" FROM "{event}" AS ev
        JOIN "{endpoint}" AS target ON target."id" = %(endpoint)s
        WHERE ev."tenant_id" = %(tenant)s
          AND ev."id" >= %(low)s AND ev."id" < %(high)s
          AND ev."created_at" >= %(since)s AND ev."created_at" < %(until)s
          AND (ev."expires_at" IS NULL OR ev."expires_at" > %(now)s)
          AND {wanted}
          AND {passes}
          AND NOT EXISTS (
              SELECT 1 FROM "{delivery}" AS d
              WHERE d."event_id" = ev."id" AND d."endpoint_id" = %(endpoint)s)
    """  # noqa: S608


@functools.cache
def recover_sql() -> str:
    """One batch of missed deliveries: written in one statement, ids returned.

    The oldest missed events first. ON CONFLICT keeps a concurrent recovery (or
    the fan-out) from writing a second delivery of one event to one endpoint.
    Keyed ones join the end of their lines, in the events' order.
    """
    delivery = Delivery._meta.db_table
    return f"""
        WITH missed AS ({_missed_sql()} ORDER BY ev."id" LIMIT %(batch)s)
        INSERT INTO "{delivery}" ("id", "tenant_id", "event_id", "endpoint_id",
            "status", "attempt_count", "round_start", "next_attempt_at",
            "lease_expires_at", "last_status_code", "last_error",
            "dead_letter_reason", "succeeded_at", "dead_lettered_at",
            "expires_at", "ordering_key", "sequence", "created_at", "updated_at")
        SELECT {UUID7_SQL}, %(tenant)s, missed."id", %(endpoint)s, %(pending)s,
            0, 0, %(due)s, %(lease)s, NULL, '', '', NULL, NULL, missed."expires_at",
            missed."ordering_key", {sequence_sql('missed."ordering_key"')},
            %(now)s, %(now)s
        FROM missed
        ORDER BY missed."id"
        ON CONFLICT ("event_id", "endpoint_id") DO NOTHING
        RETURNING "id", "endpoint_id"
    """  # noqa: S608
