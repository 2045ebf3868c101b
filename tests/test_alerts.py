"""The alerting rules (deploy/prometheus/alerts.yml), checked and run by promtool.

Each alert gets series under which it must fire (and not before its `for:` has
passed) and series of a healthy service under which it must stay silent; promtool
evaluates the real rules file against them (`promtool test rules`). promtool
comes from Debian's prometheus package: `make test` (scripts/test.sh) unpacks it
into .tools/ when it is missing, without installing or starting Prometheus.
"""

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.promql import metric_names, registry_series_names
from webhooks_project.celery import scheduled_task_names

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
SEVERITIES = {"critical", "warning", "info"}
HEARTBEAT = "webhook_periodic_task_last_success_timestamp_seconds"

needs_promtool = pytest.mark.skipif(
    not shutil.which("promtool"), reason="promtool not installed (make test adds it)"
)


def web(metric: str, **labels: str) -> str:
    """A series as Prometheus scrapes it from web: `metric{labels, instance, job}`."""
    pairs = [f'{name}="{value}"' for name, value in labels.items()]
    pairs += ['instance="web:8000"', 'job="webhooks"']
    return f"{metric}{{{','.join(pairs)}}}"


def stamp(task: str) -> str:
    return web(HEARTBEAT, task=f"deliveries.{task}")


def attempts(result: str) -> str:
    return web("webhook_delivery_attempts_total", result=result)


def depth(queue: str) -> str:
    return web("webhook_queue_depth", queue=queue)


def latency(under_1: str, under_30: str, under_60: str) -> dict[str, str]:
    """The latency histogram's buckets (cumulative); every delivery under 60 s."""
    bucket = "webhook_delivery_latency_seconds_bucket"
    return {
        web(bucket, le="1"): under_1,
        web(bucket, le="30"): under_30,
        web(bucket, le="60"): under_60,
        web(bucket, le="+Inf"): under_60,
    }


@dataclass(frozen=True)
class Case:
    """An alert, series that fire it, and series under which it stays silent.

    `series` maps a series to its values in promtool's notation (one sample a
    minute; `a+bxn` is a, a+b, ... n more times). It must not fire at any of
    `silent_at` (before its `for:` has passed) and fire at `fires_at` with
    `labels` (besides its severity). At `fires_at`, each of `healthy` (other
    series) must leave it silent.
    """

    alert: str
    series: dict[str, str]
    silent_at: tuple[str, ...]
    fires_at: str
    labels: dict[str, str] = field(default_factory=dict)
    healthy: tuple[dict[str, str], ...] = ()


CASES = (
    Case(
        "WebhooksScrapeFailing",
        {web("up"): "1 1 1 0x10"},
        silent_at=("2m", "4m"),
        fires_at="6m",
        labels={"instance": "web:8000", "job": "webhooks"},
        healthy=({web("up"): "1x10"},),
    ),
    Case(
        "WebhookSweepStale",
        {
            # enqueue_due stamps every minute until minute 10, then never again
            stamp("enqueue_due"): "0+60x10 600x30",
            stamp("sweep_dead_letters"): "0+60x40",
        },
        silent_at=("15m", "17m"),
        fires_at="19m",
        labels={"task": "deliveries.enqueue_due"},
        healthy=(
            {stamp("enqueue_due"): "0+60x40", stamp("sweep_dead_letters"): "0+60x40"},
        ),
    ),
    Case(
        "WebhookSweepNeverRan",
        {web("up"): "1x30"},
        silent_at=("14m",),
        fires_at="16m",
        labels={"task": "deliveries.sweep_dead_letters"},
        healthy=({stamp("sweep_dead_letters"): "0+60x30"},),
    ),
    Case(
        "WebhookLogCleanupStale",
        {stamp("cleanup_attempt_logs"): "0x200"},
        silent_at=("175m", "190m"),
        fires_at="192m",
        labels={"task": "deliveries.cleanup_attempt_logs"},
        healthy=(
            # stamped every hour: within the last 3 hours at every minute
            {stamp("cleanup_attempt_logs"): "0x59 3600x59 7200x59 10800x20"},
        ),
    ),
    Case(
        "WebhookRetentionStale",
        {stamp("purge_expired_events"): "0x100"},
        silent_at=("55m", "68m"),
        fires_at="71m",
        labels={"task": "deliveries.purge_expired_events"},
        healthy=(
            # stamped on every run, within the last hour at every minute
            {stamp("purge_expired_events"): "0+60x100"},
        ),
    ),
    Case(
        "WebhookAttemptPartitionsStale",
        {stamp("maintain_attempt_partitions"): "0x400"},
        silent_at=("355m", "368m"),
        fires_at="371m",
        labels={"task": "deliveries.maintain_attempt_partitions"},
        healthy=(
            # stamped at 0, 2 and 5 h (failed runs between): never 6 h apart
            {stamp("maintain_attempt_partitions"): "0x119 7200x179 18000x100"},
        ),
    ),
    Case(
        "WebhookDeadLetterEventsStale",
        # stamped every minute until minute 10, then never again
        {stamp("publish_dead_letter_events"): "0+60x10 600x30"},
        silent_at=("15m", "17m"),
        fires_at="19m",
        labels={"task": "deliveries.publish_dead_letter_events"},
        healthy=({stamp("publish_dead_letter_events"): "0+60x40"},),
    ),
    Case(
        "WebhookDeliveriesNotProgressing",
        {
            depth("deliveries"): "500x20",
            attempts("success"): "100x20",
            # held at ingestion counts in the web: not a sign of live workers
            web("webhook_deliveries_postponed_total", reason="held"): "0+10x20",
        },
        silent_at=("9m",),
        fires_at="11m",
        healthy=(
            {depth("deliveries"): "500x20", attempts("success"): "0+60x20"},
            {  # every delivery put off (say, all for one busy endpoint): alive
                depth("deliveries"): "500x20",
                attempts("success"): "100x20",
                web("webhook_deliveries_postponed_total", reason="concurrency"): (
                    "0+60x20"
                ),
            },
            # nothing waits, nothing happens: a quiet night
            {depth("deliveries"): "0x20", attempts("success"): "100x20"},
        ),
    ),
    Case(  # every worker cut off from Redis puts off all it takes: no progress
        "WebhookDeliveriesNotProgressing",
        {
            depth("deliveries"): "500x20",
            attempts("success"): "100x20",
            web("webhook_deliveries_postponed_total", reason="unmetered"): "0+60x20",
        },
        silent_at=("9m",),
        fires_at="11m",
        healthy=(
            {  # one worker cut off, the others deliver
                depth("deliveries"): "500x20",
                attempts("success"): "0+60x20",
                web("webhook_deliveries_postponed_total", reason="unmetered"): (
                    "0+60x20"
                ),
            },
        ),
    ),
    Case(
        "WebhookWorkersWithoutRedis",
        {web("webhook_deliveries_postponed_total", reason="unmetered"): "0+30x20"},
        silent_at=("4m",),
        fires_at="7m",
        healthy=(
            {web("webhook_deliveries_postponed_total", reason="unmetered"): "7x20"},
        ),
    ),
    Case(
        "WebhookDeliveryBacklog",
        {depth("deliveries"): "20000x30"},
        silent_at=("14m",),
        fires_at="16m",
        healthy=({depth("deliveries"): "900x30", depth("retries"): "20000x30"},),
    ),
    Case(  # the same backlog in the endpoints' own queues
        "WebhookDeliveryBacklog",
        {depth("deliveries"): "3000x30", depth("endpoints"): "8000x30"},
        silent_at=("14m",),
        fires_at="16m",
        healthy=({depth("deliveries"): "3000x30", depth("endpoints"): "6000x30"},),
    ),
    Case(
        "WebhookAttemptFailuresHigh",
        {attempts("success"): "0+6x40", attempts("5xx"): "0+30x40"},
        silent_at=("15m",),
        fires_at="25m",
        healthy=(
            # mostly successes
            {attempts("success"): "0+60x40", attempts("5xx"): "0+6x40"},
            # mostly failures, but a trickle: one bad endpoint, not the platform
            {attempts("success"): "0+1x40", attempts("5xx"): "0+5x40"},
        ),
    ),
    Case(
        "WebhookDeadLettersGrowing",
        {web("webhook_deliveries_dead_lettered_total"): "0+5x120"},
        silent_at=("20m",),
        fires_at="90m",
        healthy=({web("webhook_deliveries_dead_lettered_total"): "0+1x120"},),
    ),
    Case(
        "WebhookDeliveryLatencyHigh",
        # every delivery between 30 and 60 s after its event was accepted
        latency("0x30", "0x30", "0+60x30"),
        silent_at=("10m",),
        fires_at="12m",
        healthy=(
            # a tenth answered only after retries: a tail, not a backlog
            latency("0+54x30", "0+54x30", "0+60x30"),
            latency("0+60x30", "0+60x30", "0+60x30"),
        ),
    ),
    Case(
        "WebhookCircuitsOpen",
        {web("webhook_circuits_open"): "2x40"},
        silent_at=("29m",),
        fires_at="31m",
        healthy=({web("webhook_circuits_open"): "0x40"},),
    ),
    Case(
        "WebhookTenantIngestRateLimited",
        {web("webhook_rate_limit_hits_total", scope="tenant"): "0+120x30"},
        silent_at=("15m",),
        fires_at="25m",
        healthy=(
            {  # endpoints' buckets postpone deliveries: flow control at work
                web("webhook_rate_limit_hits_total", scope="endpoint"): "0+600x30",
                web("webhook_rate_limit_hits_total", scope="tenant"): "0+30x30",
            },
        ),
    ),
)


@functools.cache
def alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120
    )


def unit_tests(case: Case, rule: dict) -> dict:
    """A `promtool test rules` file: the case's firing and healthy series."""

    def series(values: dict[str, str]) -> list[dict]:
        return [{"series": name, "values": value} for name, value in values.items()]

    def silent(at: str) -> dict:
        return {"eval_time": at, "alertname": case.alert, "exp_alerts": []}

    fired = {
        "exp_labels": {"severity": rule["labels"]["severity"], **case.labels},
        "exp_annotations": rule["annotations"],
    }
    firing = {
        "interval": "1m",
        "input_series": series(case.series),
        "alert_rule_test": [
            *(silent(at) for at in case.silent_at),
            {
                "eval_time": case.fires_at,
                "alertname": case.alert,
                "exp_alerts": [fired],
            },
        ],
    }
    healthy = [
        {
            "interval": "1m",
            "input_series": series(values),
            "alert_rule_test": [silent(case.fires_at)],
        }
        for values in case.healthy
    ]
    return {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [firing, *healthy],
    }


def test_every_alert_has_a_severity_a_summary_and_a_case():
    rules = alert_rules()
    assert {case.alert for case in CASES} == set(rules)  # some have two cases
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name
    for case in CASES:
        assert case.healthy, f"{case.alert}: no healthy series"


def test_alerts_query_metrics_the_service_exposes():
    known = registry_series_names() | {"up"}
    for name, rule in alert_rules().items():
        used = metric_names(rule["expr"])
        assert used, name
        assert not used - known, f"{name}: {sorted(used - known)} not in metrics.py"


def test_staleness_alerts_cover_every_task_beat_schedules():
    watched = set()
    for rule in alert_rules().values():
        if HEARTBEAT in rule["expr"]:
            watched |= set(re.findall(r"deliveries\.[a-z_]+", rule["expr"]))
    assert watched == scheduled_task_names()


def test_prometheus_loads_the_rules_in_compose_too():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == [RULES.name]
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    # Next to the config in the container, as here: the relative path holds.
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in compose
    assert (
        "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml" in compose
    )


@needs_promtool
def test_rules_pass_promtool_check():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len({case.alert for case in CASES})} rules found" in result.stdout


@needs_promtool
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.alert)
def test_alert_fires_on_its_series_and_stays_silent_on_healthy_ones(case, tmp_path):
    path = tmp_path / f"{case.alert}.test.yml"
    path.write_text(yaml.safe_dump(unit_tests(case, alert_rules()[case.alert])))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
