"""Stop and start the local PostgreSQL, RabbitMQ and Redis, bounded in time.

Only services on 127.0.0.1 are touched, with the commands of DESIGN.md; every wait
gives up after a fixed time and raises, so a fault run can never hang on them.
"""

import re
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
]
READY_TIMEOUT = 90.0


class ServiceError(RuntimeError):
    """A service did not stop or come back in time."""


def require_local(url: str) -> None:
    """Refuse to restart anything that is not on this machine's loopback."""
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ServiceError(f"refusing to restart a service on {host}: not 127.0.0.1")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(predicate, *, what: str, timeout: float = READY_TIMEOUT) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise ServiceError(f"{what} within {timeout:.0f} s")


def _run(args: list[str], *, timeout: float = 60.0) -> None:
    subprocess.run(
        args,
        check=True,
        timeout=timeout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def rabbitmq_stop() -> None:
    """Stop the RabbitMQ node; returns once AMQP no longer answers."""
    _run(["rabbitmqctl", "stop"], timeout=120)
    _wait(lambda: not port_open(5672), what="RabbitMQ did not stop")


def rabbitmq_start() -> float:
    """Start RabbitMQ (`rabbitmq-server -detached`) and wait until it serves."""
    started = time.monotonic()
    _run(["rabbitmq-server", "-detached"])
    _wait(_rabbitmq_booted, what="RabbitMQ did not start")
    return time.monotonic() - started


def _rabbitmq_booted() -> bool:
    if not port_open(5672):
        return False
    result = subprocess.run(
        ["rabbitmqctl", "await_startup", "--timeout", "5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )
    return result.returncode == 0


def rabbitmq_ensure_running() -> None:
    """Start RabbitMQ if a fault left it stopped."""
    if not port_open(5672):
        rabbitmq_start()


def redis_restart() -> float:
    """Shut Redis down (losing its buckets and circuits) and start it again."""
    started = time.monotonic()
    subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )
    _wait(lambda: not port_open(6379), what="Redis did not stop", timeout=30)
    redis_start()
    return time.monotonic() - started


def redis_start() -> None:
    """Start Redis with the command of DESIGN.md and wait for its port."""
    _run(REDIS_START)
    _wait(lambda: port_open(6379), what="Redis did not start", timeout=30)


def redis_ensure_running() -> None:
    """Start Redis if a fault left it stopped."""
    if not port_open(6379):
        redis_start()


def postgres_cluster() -> str:
    """The version of the local PostgreSQL cluster (`ls /etc/postgresql`)."""
    versions = sorted(path.name for path in Path("/etc/postgresql").iterdir())
    if not versions:
        raise ServiceError("no PostgreSQL cluster under /etc/postgresql")
    return versions[-1]


def postgres_restart() -> float:
    """Restart PostgreSQL (fast mode: every connection is cut) and wait for it."""
    started = time.monotonic()
    _run(
        [
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            postgres_cluster(),
            "main",
            "restart",
            "-m",
            "fast",
        ],
        timeout=120,
    )
    _wait(lambda: port_open(5432), what="PostgreSQL did not start", timeout=60)
    return time.monotonic() - started


def postgres_ensure_running() -> None:
    """Start PostgreSQL if a fault left it stopped."""
    if not port_open(5432):
        _run(
            [
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                postgres_cluster(),
                "main",
                "start",
            ],
            timeout=120,
        )
        _wait(lambda: port_open(5432), what="PostgreSQL did not start", timeout=60)


def postgres_terminate(*, database: str) -> int:
    """Cut every connection to `database` with pg_terminate_backend; return count."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", database):
        raise ServiceError(f"unexpected database name {database!r}")
    result = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-At",
            "-c",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            f" WHERE datname = '{database}' AND pid <> pg_backend_pid()",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return int(result.stdout.strip() or 0)
