"""The attempts table's weekly partitions: routing, upkeep, conversion, plans."""

from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from deliveries import selectors, tasks
from deliveries.models import DeliveryAttempt, DeliveryStatus
from deliveries.services.partitions import (
    AHEAD,
    DEFAULT_PARTITION,
    WEEK,
    PartitionMaintenanceIncomplete,
    attempt_partition_create,
    attempt_partition_drop,
    attempt_partitions,
    attempt_partitions_maintain,
    attempt_retention_horizon,
    attempts_partitioned,
    partition_name,
    week_start,
)
from tests.conftest import test_database_url
from tests.deliveries.test_statement_plans import table_reads
from tests.factories import make_endpoint, make_event, make_tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def delivery(tenant):
    make_endpoint(tenant=tenant)
    _, [made] = make_event(tenant=tenant)
    return made


@pytest.fixture
def retention(settings):
    """The default retention rules: a horizon of 30 days + a 2-day round."""
    settings.WEBHOOK_RETENTION_DAYS = 30
    settings.WEBHOOK_LOG_RETENTION_HOURS = 72
    settings.WEBHOOK_RETRY_SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000]
    settings.WEBHOOK_RETRY_JITTER = 0.2


def partition_of(attempt: DeliveryAttempt) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            'SELECT tableoid::regclass::text FROM "deliveries_deliveryattempt" '
            "WHERE id = %s",
            [attempt.pk],
        )
        return cursor.fetchone()[0]


def names() -> set[str]:
    return {partition.name for partition in attempt_partitions()}


def attempt(delivery, started_at, number=1) -> DeliveryAttempt:
    return DeliveryAttempt.objects.create(
        delivery=delivery, number=number, started_at=started_at, outcome="success"
    )


def test_the_table_is_partitioned_with_weeks_ahead_and_a_default():
    assert attempts_partitioned()
    now = timezone.now()
    weeks = {partition_name(week_start(now) + n * WEEK) for n in range(3)}
    assert weeks | {DEFAULT_PARTITION} <= names()


def test_an_attempt_goes_to_the_partition_of_its_week(delivery):
    now = timezone.now()
    made = attempt(delivery, now)
    assert partition_of(made) == partition_name(week_start(now))
    # and reads back through the model as ever
    assert list(selectors.delivery_attempts(delivery=delivery)) == [made]


def test_an_attempt_far_in_the_past_or_future_still_inserts(delivery):
    now = timezone.now()
    past = attempt(delivery, now - timedelta(days=3650), number=1)
    future = attempt(delivery, now + timedelta(days=400), number=2)
    assert partition_of(past) == partition_of(future) == DEFAULT_PARTITION
    assert delivery.attempts.count() == 2


def test_upkeep_creates_weeks_ahead_once(retention):
    now = timezone.now()
    later = now + 3 * WEEK
    result = attempt_partitions_maintain(now=later)
    wanted = {
        partition_name(week_start(later) + n * WEEK)
        for n in range(3)
        if week_start(later) + n * WEEK < later + AHEAD
    }
    assert wanted <= names()
    assert set(result.created) == wanted
    assert attempt_partitions_maintain(now=later).created == []


def test_creating_a_week_moves_its_rows_out_of_the_default_partition(delivery):
    # given: an attempt of a week with no partition yet (beat stopped)
    start = week_start(timezone.now()) + 5 * WEEK
    stray = attempt(delivery, start + timedelta(hours=1))
    assert partition_of(stray) == DEFAULT_PARTITION
    # when
    attempt_partition_create(start)
    # then
    assert partition_of(stray) == partition_name(start)
    assert delivery.attempts.get().pk == stray.pk


def test_horizon_is_the_longest_retention_plus_a_round(retention, settings):
    assert attempt_retention_horizon() == timedelta(days=32)
    make_tenant(retention_days=90)
    assert attempt_retention_horizon() == timedelta(days=92)
    settings.WEBHOOK_LOG_RETENTION_HOURS = 100 * 24
    assert attempt_retention_horizon() == timedelta(days=102)


def test_upkeep_drops_only_weeks_past_the_horizon(retention, delivery):
    # given: weeks from 8 to 3 weeks back; a dead letter's attempt 4 weeks back
    now = timezone.now()
    this_week = week_start(now)
    for weeks_back in range(3, 9):
        attempt_partition_create(this_week - weeks_back * WEEK)
    kept = attempt(delivery, this_week - 4 * WEEK + timedelta(days=1))
    delivery.status = DeliveryStatus.DEAD_LETTER
    delivery.dead_lettered_at = kept.started_at + timedelta(days=1)
    delivery.save()
    # when: a tenant keeps its events 90 days (horizon 92 days)
    tenant = make_tenant(retention_days=90)
    # then: none of them is past it
    assert attempt_partitions_maintain(now=now).dropped == []
    # when: retention is 30 days for all (horizon 32 days)
    tenant.delete()
    result = attempt_partitions_maintain(now=now)
    # then: the weeks that ended over 32 days ago went, and only those
    gone = {
        partition_name(this_week - n * WEEK)
        for n in range(3, 9)
        if this_week - (n - 1) * WEEK <= now - timedelta(days=32)
    }
    assert set(result.dropped) == gone
    assert len(gone) in (3, 4)
    assert not gone & names()
    assert DeliveryAttempt.objects.filter(pk=kept.pk).exists()


def test_the_task_runs_the_upkeep(retention):
    assert tasks.maintain_attempt_partitions() == 0


@pytest.mark.django_db(transaction=True)
def test_a_drop_gives_up_on_a_lock_it_would_wait_for(retention):
    # given: an old week, and a transaction reading the table that stays open
    old = week_start(timezone.now()) - 10 * WEEK
    attempt_partition_create(old)
    with psycopg.connect(test_database_url()) as other:
        other.execute("SELECT count(*) FROM deliveries_deliveryattempt")
        # when / then: the drop waits for its lock only LOCK_TIMEOUT
        with pytest.raises(PartitionMaintenanceIncomplete):
            attempt_partitions_maintain()
        assert partition_name(old) in names()
    assert partition_name(old) in attempt_partitions_maintain().dropped


def test_an_attempt_list_reads_each_partition_through_the_delivery_index(delivery):
    # given: thousands of attempts this week (analyzed) and a few in the default
    now = timezone.now()
    attempt(delivery, now + timedelta(days=400))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO deliveries_deliveryattempt (delivery_id, number, started_at,
                duration_ms, outcome, request_headers, response_status,
                response_headers, response_body, error)
            SELECT %s, n, %s, 1, 'success', '{}', 200, '{}', '', ''
            FROM generate_series(2, 5000) AS n
            """,
            [delivery.pk, now],
        )
        cursor.execute("ANALYZE deliveries_deliveryattempt")
        # when: the attempts API's statement
        sql, params = selectors.delivery_attempts(
            delivery=delivery
        ).query.sql_with_params()
        statement = cursor.mogrify(sql, params)
    # then
    used = table_reads(statement, None, "deliveries_deliveryattempt")
    assert used == {"attempt_delivery_number"}


def test_a_range_of_started_at_reads_its_weeks_only(delivery):
    now = timezone.now()
    sql, params = (
        DeliveryAttempt.objects.filter(
            started_at__gte=now - timedelta(hours=1), started_at__lt=now
        )
        .values("outcome")
        .query.sql_with_params()
    )
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    read = {name for name in names() if f" {name} " in plan}
    assert read
    assert read <= {partition_name(week_start(now - timedelta(hours=1)))} | {
        partition_name(week_start(now))
    }


@pytest.mark.django_db(transaction=True)
def test_the_conversion_keeps_every_row_in_a_legacy_partition(delivery):
    # given: the plain table of before, holding attempts
    executor = MigrationExecutor(connection)
    executor.migrate([("deliveries", "0011_delivery_parked_at")])
    assert not attempts_partitioned()
    now = timezone.now()
    made = [attempt(delivery, now - timedelta(days=n), number=n) for n in (1, 2, 3)]
    # when
    executor = MigrationExecutor(connection)
    executor.migrate([("deliveries", "0012_attempt_partitions")])
    # then: partitioned, the old table its legacy partition up to the cutover
    assert attempts_partitioned()
    legacy = next(p for p in attempt_partitions() if p.name.endswith("_legacy"))
    assert legacy.start is None
    assert legacy.end == week_start(now + timedelta(days=1)) + WEEK
    assert {partition_of(a) for a in made} == {legacy.name}
    assert sorted(delivery.attempts.values_list("pk", flat=True)) == sorted(
        a.pk for a in made
    )
    # new rows go on with greater ids, into the legacy partition until the cutover
    newer = attempt(delivery, now, number=4)
    assert newer.pk > max(a.pk for a in made)
    assert partition_of(newer) == legacy.name
    # the weeks after the cutover have their own partitions
    assert partition_name(legacy.end) in names()
    # the legacy partition goes whole once its range is past the horizon
    later = attempt_partitions_maintain(
        now=legacy.end + attempt_retention_horizon() + timedelta(hours=1)
    )
    assert legacy.name in later.dropped
    for name in later.created:  # leave the layout as the other tests expect it
        attempt_partition_drop(name)
