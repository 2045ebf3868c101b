"""Check that PostgreSQL, RabbitMQ and Redis answer; optionally create the database.

Run with the project's virtualenv from anywhere: `python scripts/check_services.py
[--create-database]`. The URLs are the project settings' (DATABASE_URL,
CELERY_BROKER_URL, REDIS_URL with their defaults). Exits 1, naming each service
that does not answer and how to start it, without a traceback.
"""

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

TIMEOUT_SECONDS = 3
REPO_ROOT = Path(__file__).resolve().parent.parent
START_COMMANDS = {
    "PostgreSQL": (
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    ),
    "RabbitMQ": "rabbitmq-server -detached",
    "Redis": (
        'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" '
        "--appendonly no"
    ),
}


def load_settings():
    """Return the project's Django settings (configured, not set up)."""
    sys.path.insert(0, str(REPO_ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")
    from django.conf import settings

    settings.DATABASES  # noqa: B018 (loads the settings module now)
    return settings


def redact(url: str) -> str:
    """Return `url` with any password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def database_url(db: dict) -> str:
    """Return a password-free URL naming the configured database."""
    user = f"{db['USER']}@" if db.get("USER") else ""
    return f"postgres://{user}{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def postgres_connect(db: dict):
    """Open an autocommit connection to the server's `postgres` database."""
    import psycopg

    return psycopg.connect(
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        dbname="postgres",
        connect_timeout=TIMEOUT_SECONDS,
        autocommit=True,
    )


def check_postgres(db: dict) -> None:
    """Raise unless the PostgreSQL server answers."""
    with postgres_connect(db) as conn:
        conn.execute("SELECT 1")


def check_rabbitmq(url: str) -> None:
    """Raise unless the AMQP broker accepts a connection."""
    from kombu import Connection

    with Connection(url, connect_timeout=TIMEOUT_SECONDS) as conn:
        conn.ensure_connection(max_retries=0, timeout=TIMEOUT_SECONDS)


def check_redis(url: str) -> None:
    """Raise unless Redis answers PING."""
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=TIMEOUT_SECONDS, socket_timeout=TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()


def create_database(db: dict) -> None:
    """Create the configured database unless it exists."""
    from psycopg import errors, sql

    with postgres_connect(db) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (db["NAME"],)
        ).fetchone()
        if exists:
            return
        try:
            conn.execute(
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"]))
            )
        except errors.DuplicateDatabase:
            return  # Created concurrently: just as good.
    print(f"Created database {db['NAME']!r}.")


def main() -> int:
    """Check every service, print what is wrong; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--create-database",
        action="store_true",
        help="Create the database named in DATABASE_URL if it is missing.",
    )
    args = parser.parse_args()
    try:
        settings = load_settings()
    except Exception as exc:  # noqa: BLE001 (report any settings error in one line)
        print(f"Cannot load the project settings: {exc}", file=sys.stderr)
        return 1
    db = settings.DATABASES["default"]
    checks: list[tuple[str, str, Callable[[], None]]] = [
        ("PostgreSQL", database_url(db), lambda: check_postgres(db)),
        (
            "RabbitMQ",
            redact(settings.CELERY_BROKER_URL),
            lambda: check_rabbitmq(settings.CELERY_BROKER_URL),
        ),
        ("Redis", redact(settings.REDIS_URL), lambda: check_redis(settings.REDIS_URL)),
    ]
    failed = []
    for name, url, check in checks:
        try:
            check()
        except Exception as exc:  # noqa: BLE001 (any failure means "not reachable")
            failed.append(name)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            print(
                f"{name} is not reachable at {url} ({type(exc).__name__}: {reason})\n"
                f"  if it is stopped, start it with: {START_COMMANDS[name]}",
                file=sys.stderr,
            )
    if failed:
        print(f"Services not reachable: {', '.join(failed)}.", file=sys.stderr)
        return 1
    print("Services reachable: PostgreSQL, RabbitMQ, Redis.")
    if args.create_database:
        try:
            create_database(db)
        except Exception as exc:  # noqa: BLE001 (one clear line, no traceback)
            print(f"Cannot create database {db['NAME']!r}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
