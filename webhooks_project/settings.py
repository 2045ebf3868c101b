"""Django settings: every value comes from the environment, with a sane default."""

import os
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from deliveries.resolver import parse_server as parse_dns_server
from webhooks_project.queues import MAINTENANCE_QUEUE, TASK_QUEUES, TASK_ROUTES


def env_str(name: str, default: str) -> str:
    """Return a string setting from the environment."""
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    """Return a boolean setting (1/true/yes/on, 0/false/no/off) from the environment.

    Any other value fails at start: a mistyped flag is not silently off.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(f"{name} must be on or off (1/0, true/false, yes/no)")


def env_int(name: str, default: int) -> int:
    """Return an integer setting from the environment; anything else fails at start."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}.") from exc


def env_float(name: str, default: float) -> float:
    """Return a float setting from the environment."""
    return float(os.environ.get(name, default))


def env_list(name: str, default: str) -> list[str]:
    """Return a comma-separated list setting from the environment."""
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def database(url: str) -> dict:
    """One database alias from its URL, with the connection reuse of every alias."""
    return dj_database_url.parse(
        url,
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )


BASE_DIR = Path(__file__).resolve().parent.parent

# Development mode relaxes the secret key requirement and enables DEBUG by default.
DEVELOPMENT = env_bool("DJANGO_DEVELOPMENT", False)
DEBUG = env_bool("DJANGO_DEBUG", DEVELOPMENT)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    # Only development mode, never DEBUG alone: a production box with DEBUG
    # switched on to look at an error must not sign sessions with a public key.
    if not DEVELOPMENT:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set (or DJANGO_DEVELOPMENT=1 for local work)."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105
# Older secret keys, still accepted (Django's rotation: the old key goes here).
SECRET_KEY_FALLBACKS = env_list("DJANGO_SECRET_KEY_FALLBACKS", "")
# Fernet keys for endpoint signing secrets at rest (subscriptions/encryption.py):
# the first encrypts, all decrypt. Unset: derived from SECRET_KEY (and fallbacks).
WEBHOOK_ENCRYPTION_KEYS = env_list("WEBHOOK_ENCRYPTION_KEYS", "")

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "tenants",
    "subscriptions",
    "deliveries",
    "portal",
    "catalog",
]

MIDDLEWARE = [
    "webhooks_project.body_limit.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files answered here, before sessions and the rest (WhiteNoise).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webhooks_project.urls"
WSGI_APPLICATION = "webhooks_project.wsgi.application"
# Paths work with and without a trailing slash (the URL patterns accept both).
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The API docs pages (webhooks_project/templates/api_docs/).
        "DIRS": [BASE_DIR / "webhooks_project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": database(
        env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/webhooks")
    )
}
# A streaming replica for the reads that tolerate lag (webhooks_project/replica.py);
# unset: every read on the primary.
if replica_url := env_str("DATABASE_REPLICA_URL", ""):
    DATABASES["replica"] = database(replica_url)
    # A silent replica host costs a routed read this long (libpq: for ever).
    DATABASES["replica"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 2)
    # Tests read the test database through it; no second test database.
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where `collectstatic` gathers the static files that web processes serve
# (WhiteNoise): scripts/setup.sh and the Dockerfile run it.
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "webhooks_project" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Content-hashed names (cached for ever by browsers) with gzip copies.
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Security headers, HTTPS and cookies: strict unless DEBUG.
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env_bool("DJANGO_SSL_REDIRECT", not DEBUG)
# Probes and scrapers speak plain HTTP inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^health/?$", r"^ready/?$", r"^metrics/?$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
# Subdomains and preloading commit the whole domain to HTTPS: the deployer opts in.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [
    check
    for check, enabled in (
        ("security.W005", SECURE_HSTS_INCLUDE_SUBDOMAINS),
        ("security.W021", SECURE_HSTS_PRELOAD),
    )
    if not enabled
]
# Every page loads its scripts, styles, images and fonts from this deployment
# only: no inline script or style (the pages keep theirs in static files), no
# CDN, no framing.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        # data: for the small icons the admin and Swagger UI inline in their CSS.
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
# Trust X-Forwarded-Proto only behind a proxy that sets it.
if env_bool("DJANGO_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["webhooks_project.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "webhooks_project.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "webhooks_project.exceptions.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["tenants.throttling.TenantApiThrottle"],
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Webhooks API",
    "DESCRIPTION": "Multi-tenant webhook delivery: endpoints, events, deliveries.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Swagger UI and ReDoc from drf-spectacular-sidecar's static files, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

# Messages (admin's "new API key: whk_...") live in the session, server side:
# the cookie storage would carry a full key in the browser's cookie jar.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# --- Celery -----------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
# No result backend: delivery outcomes live in PostgreSQL.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# A message is acknowledged after the task body ran; a killed worker's task is requeued.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Keep a small number of messages per worker process so a crash strands few.
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 4)
# Publisher confirms: apply_async returns only once RabbitMQ has the message.
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# Bounded publish retries so a request never hangs long on a dead broker.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": env_int("CELERY_PUBLISH_MAX_RETRIES", 2),
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("CELERY_BROKER_CONNECTION_TIMEOUT", 2.0)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_TASK_QUEUES = TASK_QUEUES
# Celery's consumer, with native delayed delivery set up once per RabbitMQ cluster
# rather than on every URL of a failover list (webhooks_project/celery_consumer.py).
CELERY_WORKER_CONSUMER = "webhooks_project.celery_consumer:Consumer"
CELERY_TASK_ROUTES = TASK_ROUTES
CELERY_TASK_DEFAULT_QUEUE = TASK_QUEUES[0].name
CELERY_TASK_DEFAULT_EXCHANGE = TASK_QUEUES[0].exchange.name
CELERY_TASK_DEFAULT_ROUTING_KEY = TASK_QUEUES[0].routing_key
# Task events feed Flower's task views but serialise every thread of a thread-pool
# worker on one event connection (throughput drops ~10x): off unless asked for
# (`celery worker -E`, or this setting).
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_WORKER_SEND_TASK_EVENTS", False)
CELERY_TASK_SEND_SENT_EVENT = CELERY_WORKER_SEND_TASK_EVENTS
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
# Keep Django's LOGGING (below) in workers and beat instead of Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup closes every database connection before and after each
# task unless this is set: a new PostgreSQL backend per delivery. Set out of reach,
# workers follow Django's CONN_MAX_AGE and health checks instead, like web
# requests (webhooks_project/celery.py closes unusable or expired connections).
CELERY_DB_REUSE_MAX = 10**9

# --- This project's tunables ------------------------------------------------
# Largest accepted request body on the API, in bytes (413 above it).
WEBHOOK_MAX_PAYLOAD_BYTES = env_int("WEBHOOK_MAX_PAYLOAD_BYTES", 256 * 1024)
# Largest body of POST /api/v1/events/batch, in bytes (413 above it).
WEBHOOK_MAX_BATCH_BYTES = env_int("WEBHOOK_MAX_BATCH_BYTES", 1024 * 1024)
# Default tenant ingestion limit in events/s (burst is twice this).
WEBHOOK_TENANT_RATE_LIMIT = env_int("WEBHOOK_TENANT_RATE_LIMIT", 1000)
# Every other API call, per tenant, in requests/s (burst twice this; 0: no limit).
WEBHOOK_API_RATE_LIMIT = env_int("WEBHOOK_API_RATE_LIMIT", 100)
# Delays between attempts in seconds: 8 attempts in all by default.
WEBHOOK_RETRY_SCHEDULE = [
    int(value)
    for value in env_list("WEBHOOK_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000,36000")
]
# Random spread applied to each retry delay (0.2 = ±20 %).
WEBHOOK_RETRY_JITTER = env_float("WEBHOOK_RETRY_JITTER", 0.2)
# Retries due within this many seconds wait in RabbitMQ (Celery's native delayed
# delivery on quorum queues); longer ones wait in PostgreSQL and the beat sweep
# enqueues them when due. Neither sits unacknowledged in a worker.
WEBHOOK_BROKER_COUNTDOWN_MAX = env_int("WEBHOOK_BROKER_COUNTDOWN_MAX", 60)
# Outbound connect timeout, and the deadline of the whole exchange (connect,
# request and response), in seconds.
WEBHOOK_CONNECT_TIMEOUT = env_float("WEBHOOK_CONNECT_TIMEOUT", 5.0)
WEBHOOK_RESPONSE_TIMEOUT = env_float("WEBHOOK_RESPONSE_TIMEOUT", 15.0)
# CA bundle (PEM file) that verifies receivers' certificates; empty: certifi's.
WEBHOOK_CA_BUNDLE = env_str("WEBHOOK_CA_BUNDLE", "")
# How long the previous endpoint secret keeps signing after a rotation, in seconds.
WEBHOOK_SECRET_ROTATION_GRACE = env_int("WEBHOOK_SECRET_ROTATION_GRACE", 24 * 3600)
# CIDRs deliveries may reach although the outbound policy blocks them by default.
WEBHOOK_ALLOWED_NETWORKS = env_list("WEBHOOK_ALLOWED_NETWORKS", "")
# DNS servers deliveries resolve endpoint names with (IP or IP:PORT, comma-separated;
# empty: the system resolver). Checked here so a typo fails at start.
WEBHOOK_DNS_SERVERS = env_list("WEBHOOK_DNS_SERVERS", "")
for _server in WEBHOOK_DNS_SERVERS:
    try:
        parse_dns_server(_server)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"WEBHOOK_DNS_SERVERS: {_server!r} is not IP, IP:PORT or [IPv6]:PORT."
        ) from exc
# How long a queued delivery may wait for a worker before the sweep enqueues it again.
WEBHOOK_QUEUE_LEASE_SECONDS = env_int("WEBHOOK_QUEUE_LEASE_SECONDS", 300)
# Extra time past the response deadline before an in-progress delivery counts as lost.
WEBHOOK_PROGRESS_LEASE_MARGIN = env_int("WEBHOOK_PROGRESS_LEASE_MARGIN", 30)
# Seconds between sweeps that enqueue due retries and lost deliveries.
WEBHOOK_SWEEP_INTERVAL = env_float("WEBHOOK_SWEEP_INTERVAL", 5.0)
# Attempt logs of succeeded deliveries are deleted after this many hours.
WEBHOOK_LOG_RETENTION_HOURS = env_int("WEBHOOK_LOG_RETENTION_HOURS", 72)
# Days events are kept (a tenant's retention_days overrides it): then an event
# whose deliveries are all final is deleted with them and their attempts. Also
# how long attempt logs of dead-lettered deliveries are kept after dead-lettering.
WEBHOOK_RETENTION_DAYS = env_int("WEBHOOK_RETENTION_DAYS", 30)
if WEBHOOK_RETENTION_DAYS < 1:
    raise ImproperlyConfigured("WEBHOOK_RETENTION_DAYS must be a positive integer.")
# A port on which each Celery worker serves the Prometheus metrics of its host's
# PROMETHEUS_MULTIPROC_DIR (0 = off, the default): for worker hosts without a web
# process, whose /metrics covers only the processes sharing its directory.
WEBHOOK_WORKER_METRICS_PORT = env_int("WEBHOOK_WORKER_METRICS_PORT", 0)
WEBHOOK_WORKER_METRICS_ADDRESS = env_str("WEBHOOK_WORKER_METRICS_ADDRESS", "127.0.0.1")
# PostgreSQL synchronous_commit for Celery workers ("off": redoable writes do
# not wait for the WAL flush; web processes always commit synchronously).
WEBHOOK_WORKER_SYNCHRONOUS_COMMIT = env_str("WEBHOOK_WORKER_SYNCHRONOUS_COMMIT", "off")
# Consecutive failures that open an endpoint's circuit breaker.
WEBHOOK_BREAKER_FAILURES = env_int("WEBHOOK_BREAKER_FAILURES", 10)
# First cooldown of an open circuit, in seconds; doubles after each failed probe.
WEBHOOK_BREAKER_COOLDOWN = env_float("WEBHOOK_BREAKER_COOLDOWN", 30.0)
# Longest cooldown of an open circuit, in seconds.
WEBHOOK_BREAKER_MAX_COOLDOWN = env_float("WEBHOOK_BREAKER_MAX_COOLDOWN", 3600.0)
# Most deliveries in flight to one endpoint at once (0 = no cap).
WEBHOOK_ENDPOINT_MAX_IN_FLIGHT = env_int("WEBHOOK_ENDPOINT_MAX_IN_FLIGHT", 20)
# Queues of their own in RabbitMQ for the fresh deliveries of endpoints in
# trouble (found refusing or full) and busy ones, paused by a worker while the
# endpoint refuses deliveries or has no room (deliveries/flow/isolation.py);
# off: one shared queue. Set it alike in web processes and workers.
WEBHOOK_ENDPOINT_QUEUES = env_bool("WEBHOOK_ENDPOINT_QUEUES", True)
# Most messages a worker holds unacknowledged from one endpoint's queue (0 = as
# from the shared queues: CELERY_WORKER_PREFETCH_MULTIPLIER x concurrency).
WEBHOOK_ENDPOINT_QUEUE_PREFETCH = env_int("WEBHOOK_ENDPOINT_QUEUE_PREFETCH", 128)
# An endpoint failing without a single success for this long is disabled (seconds).
WEBHOOK_DISABLE_AFTER = env_int("WEBHOOK_DISABLE_AFTER", 5 * 24 * 3600)
# Most dead letters one replay call (API or admin) queues again, oldest first.
WEBHOOK_REPLAY_MAX = env_int("WEBHOOK_REPLAY_MAX", 10_000)
# Most endpoints one tenant may have (400 on creating one more), in all and at
# one destination host.
WEBHOOK_MAX_ENDPOINTS_PER_TENANT = env_int("WEBHOOK_MAX_ENDPOINTS_PER_TENANT", 1000)
WEBHOOK_MAX_ENDPOINTS_PER_HOST = env_int("WEBHOOK_MAX_ENDPOINTS_PER_HOST", 25)

# Periodic tasks, written into django-celery-beat's tables when beat starts.
CELERY_BEAT_SCHEDULE = {
    "enqueue-due-deliveries": {
        "task": "deliveries.enqueue_due",
        "schedule": WEBHOOK_SWEEP_INTERVAL,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": WEBHOOK_SWEEP_INTERVAL * 2},
    },
    "sweep-dead-letters": {
        "task": "deliveries.sweep_dead_letters",
        "schedule": 60.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 120},
    },
    # Operational events: the minute's dead letters, one summary per endpoint.
    "publish-dead-letter-events": {
        "task": "deliveries.publish_dead_letter_events",
        "schedule": 60.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 120},
    },
    "cleanup-attempt-logs": {
        "task": "deliveries.cleanup_attempt_logs",
        "schedule": 3600.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 3600},
    },
    # Runs for up to 240 s (deliveries/services/retention.py PURGE_BUDGET).
    "purge-expired-events": {
        "task": "deliveries.purge_expired_events",
        "schedule": 300.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 300},
    },
    # The attempts table's weekly partitions: two weeks ahead, none past the
    # horizon (deliveries/services/partitions.py).
    "maintain-attempt-partitions": {
        "task": "deliveries.maintain_attempt_partitions",
        "schedule": 3600.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 3600},
    },
}

# Log lines: one JSON object per line (json) or plain text; text by default in
# development, JSON elsewhere. Celery workers and beat use the same handlers.
LOG_FORMAT = env_str("LOG_FORMAT", "text" if DEVELOPMENT or DEBUG else "json").lower()
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured("LOG_FORMAT must be json or text.")
# The root level of every process: web, workers and beat (whose --loglevel
# it overrides, webhooks_project/celery.py).
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(
        "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL."
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "webhooks_project.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
    },
}
