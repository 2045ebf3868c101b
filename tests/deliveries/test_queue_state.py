"""Property tests of a delivery row's queue state (deliveries/leases.py).

Random sequences of what happens to delivery rows, through the real services and
PostgreSQL: ingestion (for an endpoint that takes deliveries or refuses them), a
claim, a failed attempt with a short or a long retry, flow control postponing a
claimed delivery, a worker postponing one unclaimed, a publish that fails, time
passing, the sweep. A model says, for each row, whether a message of it may exist.
After every step:
- every open row has a lease;
- "queued" (deliveries.leases.is_queued) holds exactly when a message may exist;
- a sweep publishes exactly the open rows whose lease had passed, and leaves the
  others as they were.
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deliveries.flow import refusals
from deliveries.flow.gate import Pass
from deliveries.flow.refusals import REFUSING_SET
from deliveries.leases import is_queued
from deliveries.models import AttemptOutcome, Delivery, DeliveryStatus
from deliveries.services.attempts import Attempt, attempts_store
from deliveries.services.claim import deliveries_claim
from deliveries.services.enqueue import deliveries_left_to_sweep
from deliveries.services.ingest import event_ingest
from deliveries.services.postponing import (
    deliveries_postpone,
    deliveries_postpone_unclaimed,
)
from deliveries.services.sweeps import deliveries_enqueue_due
from deliveries.transport import TransportResult
from tests.factories import make_endpoint, make_tenant
from webhooks_project.redis_client import get_redis

pytestmark = pytest.mark.django_db

ROWS = 3
STEPS = st.lists(
    st.tuples(
        st.integers(0, ROWS - 1),
        st.sampled_from(
            [
                "claim",
                "fail_short",
                "fail_long",
                "postpone_short",
                "postpone_long",
                "postpone_hanging",
                "postpone_unclaimed",
                "publish_failed",
                "pass_10s",
                "pass_10min",
                "sweep",
            ]
        ),
    ),
    min_size=1,
    max_size=25,
)


class Rows:
    """Delivery rows and, for each, whether a message of it may exist."""

    def __init__(self, *, refusing: list[bool]) -> None:
        tenant = make_tenant()  # one of its own: the example's endpoint only
        endpoint = make_endpoint(tenant=tenant)
        self.ids = []
        self.message: dict = {}
        redis = get_redis()
        for refuses in refusing:
            if refuses:  # as the gate lists it: until when, on Redis's clock
                seconds, micros = redis.time()
                until_ms = seconds * 1000 + micros // 1000 + 60_000
                redis.zadd(REFUSING_SET, {str(endpoint.pk): until_ms})
            refusals.forget()
            event = event_ingest(tenant=tenant, event_type="t", payload={}).event
            [delivery_id] = event.deliveries.values_list("pk", flat=True)
            self.ids.append(delivery_id)
            self.message[delivery_id] = not refuses
            redis.zrem(REFUSING_SET, str(endpoint.pk))
        refusals.forget()
        self.claimed: dict = {}

    def row(self, index: int) -> Delivery:
        return Delivery.objects.get(pk=self.ids[index])

    def open_rows(self) -> list[Delivery]:
        return [
            row
            for row in Delivery.objects.filter(pk__in=self.ids)
            if row.status
            in (
                DeliveryStatus.PENDING,
                DeliveryStatus.FAILED,
                DeliveryStatus.IN_PROGRESS,
            )
        ]

    def check(self) -> None:
        for row in self.open_rows():
            assert row.lease_expires_at is not None, row
            if row.status != DeliveryStatus.IN_PROGRESS:
                queued = is_queued(due=row.next_attempt_at, lease=row.lease_expires_at)
                assert queued == self.message[row.pk], (row, self.message[row.pk])


def apply(rows: Rows, index: int, step: str) -> None:
    delivery_id = rows.ids[index]
    row = rows.row(index)
    if step == "claim":
        if row.status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED):
            Delivery.objects.filter(pk=delivery_id).update(
                next_attempt_at=timezone.now() - timedelta(seconds=1)
            )
            claimed = deliveries_claim(delivery_ids=[delivery_id])
            if claimed:
                rows.claimed[delivery_id] = claimed[0]
                rows.message[delivery_id] = True  # in the worker's hands
    elif step in ("fail_short", "fail_long"):
        claimed = rows.claimed.pop(delivery_id, None)
        if claimed is not None and row.status == DeliveryStatus.IN_PROGRESS:
            # The schedule's first delay: 5 s (a countdown) or 300 s (PostgreSQL).
            delay = 5 if step == "fail_short" else 300
            claimed.round_start = claimed.attempt_count
            Delivery.objects.filter(pk=delivery_id).update(
                round_start=claimed.attempt_count
            )
            with settings_override(retry=[delay]):
                [decision] = attempts_store(attempts=[failed_attempt(claimed)])
            rows.message[delivery_id] = decision.retry_in is not None
    elif step in ("postpone_short", "postpone_long", "postpone_hanging"):
        claimed = rows.claimed.pop(delivery_id, None)
        if claimed is not None and row.status == DeliveryStatus.IN_PROGRESS:
            wait, reason = {
                "postpone_short": (3.0, "circuit_open"),
                "postpone_long": (120.0, "circuit_open"),
                "postpone_hanging": (3.0, "hanging"),
            }[step]
            [decision] = deliveries_postpone(items=[(claimed, wait, reason)])
            rows.message[delivery_id] = decision.retry_in is not None
    elif step == "postpone_unclaimed":
        # A worker took the message (an endpoint refusing everything) and acked it.
        if row.status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED):
            due = timezone.now() + timedelta(seconds=30)
            moved = deliveries_postpone_unclaimed(
                delivery_ids=[delivery_id], due=due, reason="held"
            )
            if moved:
                rows.message[delivery_id] = False
    elif step == "publish_failed":
        if row.status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED):
            deliveries_left_to_sweep([delivery_id])
            rows.message[delivery_id] = False
    elif step in ("pass_10s", "pass_10min"):
        shift = timedelta(seconds=10 if step == "pass_10s" else 600)
        for open_row in rows.open_rows():
            Delivery.objects.filter(pk=open_row.pk).update(
                next_attempt_at=open_row.next_attempt_at - shift,
                lease_expires_at=open_row.lease_expires_at - shift,
            )
    elif step == "sweep":
        sweep(rows)


def sweep(rows: Rows) -> None:
    """The sweep publishes exactly the open rows whose lease passed."""
    now = timezone.now()
    before = {row.pk: row for row in rows.open_rows()}
    passed = {pk for pk, row in before.items() if row.lease_expires_at <= now}
    others = Delivery.objects.exclude(pk__in=rows.ids)
    # Only this example's rows are due (earlier examples' rows are moved away).
    others.filter(lease_expires_at__lte=now).update(
        lease_expires_at=now + timedelta(days=1)
    )
    result = deliveries_enqueue_due(backlog=0)
    assert result.enqueued == len(passed)
    after = {row.pk: row for row in rows.open_rows()}
    for pk, row in before.items():
        if pk in passed:
            assert after[pk].lease_expires_at > now  # published: a fresh lease
            rows.message[pk] = True
            rows.claimed.pop(pk, None)  # a lost worker's claim is void now
        else:
            assert after[pk].lease_expires_at == row.lease_expires_at


def failed_attempt(claimed: Delivery) -> Attempt:
    attempt = Attempt(delivery=claimed, passed=Pass(allowed=True))
    attempt.started_at = timezone.now()
    attempt.result = TransportResult(
        AttemptOutcome.HTTP_5XX, duration_ms=5, status=500, error="HTTP 500"
    )
    return attempt


class settings_override:
    """WEBHOOK_RETRY_SCHEDULE and no jitter, for one recording."""

    def __init__(self, *, retry: list[int]) -> None:
        from django.test import override_settings

        self._override = override_settings(
            WEBHOOK_RETRY_SCHEDULE=retry, WEBHOOK_RETRY_JITTER=0.0
        )

    def __enter__(self):
        self._override.enable()

    def __exit__(self, *exc_info):
        self._override.disable()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(refusing=st.lists(st.booleans(), min_size=ROWS, max_size=ROWS), steps=STEPS)
def test_queue_state_follows_every_message(refusing, steps):
    rows = Rows(refusing=refusing)
    rows.check()
    for index, step in steps:
        apply(rows, index, step)
        rows.check()
