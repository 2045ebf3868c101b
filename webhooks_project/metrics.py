"""Prometheus metrics, shared by web and worker processes (multiprocess mode).

With PROMETHEUS_MULTIPROC_DIR set (as `make run` and the Procfile processes do),
every process writes its samples there and `/metrics` adds them up, so one scrape
covers gunicorn and Celery together, on one machine or in containers that share
the directory (docker-compose.yml). Labels carry bounded values only, never ids.
"""

import logging

from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

from webhooks_project import multiproc

logger = logging.getLogger(__name__)

# Before any metric exists: their files must carry the host name (see multiproc).
multiproc.use_host_qualified_files()

EVENTS_INGESTED = Counter("webhook_events_ingested", "Events accepted through the API.")
PLATFORM_EVENTS = Counter(
    "webhook_platform_events",
    "Operational events the platform published into tenants' streams, by type "
    "(platform.endpoint.disabled, platform.delivery.dead_lettered).",
    ["type"],
)
DELIVERY_ATTEMPTS = Counter(
    "webhook_delivery_attempts",
    "Delivery attempts by result (success, 4xx, 5xx, other, timeout, "
    "connection_error, blocked).",
    ["result"],
)
DELIVERIES_SUCCEEDED = Counter(
    "webhook_deliveries_succeeded", "Deliveries that reached their endpoint."
)
DELIVERIES_DEAD_LETTERED = Counter(
    "webhook_deliveries_dead_lettered", "Deliveries moved to the dead-letter queue."
)
DELIVERIES_EXPIRED = Counter(
    "webhook_deliveries_expired",
    "Deliveries not made before their event's expires_at, settled as expired.",
)
DELIVERIES_RECOVERED = Counter(
    "webhook_deliveries_recovered",
    "Deliveries whose attempt's outcome was lost (a worker or the database gone "
    "mid-attempt), queued again by the sweep: each may reach its receiver twice.",
)
DELIVERY_DURATION = Histogram(
    "webhook_delivery_duration_seconds",
    "Duration of one outbound attempt.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
DELIVERY_LATENCY = Histogram(
    "webhook_delivery_latency_seconds",
    "Time from an event's acceptance to its successful delivery.",
    buckets=(
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        60,
        300,
        1800,
        7200,
        36000,
        86400,
    ),
)
DLQ_SIZE = Gauge(
    "webhook_dlq_size",
    "Deliveries in the dead-letter queue (refreshed by the sweep).",
    multiprocess_mode="mostrecent",
)
DELIVERIES_POSTPONED = Counter(
    "webhook_deliveries_postponed",
    "Attempts put off by flow control (paused, circuit_open, half_open, "
    "concurrency, stalled, hanging, rate_limited, held) without being spent.",
    ["reason"],
)
QUEUE_DEPTH = Gauge(
    "webhook_queue_depth",
    "Ready messages in a delivery queue (deliveries, retries; refreshed by the sweep).",
    ["queue"],
    multiprocess_mode="mostrecent",
)
CIRCUITS_OPEN = Gauge(
    "webhook_circuits_open",
    "Endpoints whose circuit breaker is open (refreshed by the sweep).",
    multiprocess_mode="mostrecent",
)
RATE_LIMIT_HITS = Counter(
    "webhook_rate_limit_hits", "Requests refused by a rate limit.", ["scope"]
)
REPLICA_FALLBACKS = Counter(
    "webhook_replica_fallbacks",
    "Lag-tolerant reads (dashboard, API lists) that the PostgreSQL replica failed "
    "and the primary answered instead.",
)
RETENTION_DELETED = Counter(
    "webhook_retention_deleted",
    "Rows deleted past their tenant's retention, by kind (events, deliveries, "
    "attempts).",
    ["kind"],
)
PERIODIC_TASK_LAST_SUCCESS = Gauge(
    "webhook_periodic_task_last_success_timestamp_seconds",
    "When each periodic task (beat's schedule: the sweeps, the log cleanup, the "
    "retention purge, the attempt partitions) last succeeded, Unix time: stale "
    "when beat or the maintenance workers are down.",
    ["task"],
    multiprocess_mode="mostrecent",
)


def host_registry() -> CollectorRegistry:
    """The metrics of every process sharing this PROMETHEUS_MULTIPROC_DIR.

    Counters and histograms are summed, gauges taken by their multiprocess mode.
    Without the directory: this process's own metrics.
    """
    if not multiproc.shared():
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def warn_if_alone(process: str) -> bool:
    """Log a warning when this process's metrics are its own only; True if so.

    Without PROMETHEUS_MULTIPROC_DIR each process counts for itself: /metrics
    on the web then shows nothing of the workers' deliveries.
    """
    if multiproc.shared():
        return False
    logger.warning(
        "PROMETHEUS_MULTIPROC_DIR is not set: the %s's metrics are its own only, "
        "and /metrics shows nothing of the other processes (set it to one "
        "directory for web, worker and beat)",
        process,
    )
    return True


@require_GET
def metrics_view(request):
    """Prometheus text for every process of this host (multiprocess aggregate)."""
    return HttpResponse(
        generate_latest(host_registry()), content_type=CONTENT_TYPE_LATEST
    )


# The worker's metrics server (serve_worker_metrics), None when off.
_worker_metrics_server = None


def serve_worker_metrics() -> tuple[str, int] | None:
    """Serve `host_registry()` over HTTP from this (worker) process, if configured.

    A daemon thread of prometheus-client's own server answers any path; it ends
    with the process. Returns the address it listens on, None when off.
    """
    from django.conf import settings

    port = settings.WEBHOOK_WORKER_METRICS_PORT
    if not port:
        return None
    address = settings.WEBHOOK_WORKER_METRICS_ADDRESS
    global _worker_metrics_server
    _worker_metrics_server, _ = start_http_server(
        port, addr=address, registry=host_registry()
    )
    return address, port


def close_inherited_metrics_socket() -> None:
    """In a forked pool child: close the copy of the worker's metrics socket.

    Children forked after the server started (a prefork child replaced) inherit
    its listening socket without the thread that serves it; holding it would
    keep the port bound after the worker itself is gone.
    """
    if _worker_metrics_server is not None:
        _worker_metrics_server.socket.close()
