"""The processes a benchmark starts: gunicorn, Celery workers, receivers.

Each is started on 127.0.0.1 with the bench settings and stopped by its own pid
(SIGTERM, then SIGKILL after a grace period); nothing else is ever signalled.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from bench.harness import BENCH_ENV, REPO

VENV_BIN = Path(sys.executable).parent
LOG_DIR = Path(tempfile.gettempdir()) / "webhooks-bench"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    """Resident memory of one process, KiB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((x for x in status.splitlines() if x.startswith("VmRSS")), "")
    return int(line.split()[1]) if line else 0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of one process so far, seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of `pid`."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class Process:
    """A subprocess of the benchmark, stopped by pid."""

    name = "process"

    def __init__(self, args: list[str], *, env: dict[str, str]):
        LOG_DIR.mkdir(exist_ok=True)
        self.args = args
        self.env = env
        self.log = LOG_DIR / f"{self.name}-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen | None = None

    def start(self):
        """Start it (its output goes to a log file under /tmp/webhooks-bench)."""
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.args,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def check(self) -> None:
        """Raise with the log's tail if the process exited."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{tail}")

    def stop(self) -> None:
        """SIGTERM this pid, SIGKILL it after 20 s (only this one process)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def rss_kib(self) -> int:
        """Resident memory of the process, KiB."""
        return rss_kib(self.proc.pid) if self.proc else 0

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def bench_env(database_url: str, metrics_dir: str, extra: dict | None = None) -> dict:
    """Environment of every bench process."""
    return {
        **os.environ,
        **BENCH_ENV,
        "DATABASE_URL": database_url,
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        "WEBHOOK_BENCH_VIEWS": "1",
        "PYTHONPATH": str(REPO),
        **(extra or {}),
    }


class Web(Process):
    """gunicorn as in the Procfile (2 workers x 4 threads, gunicorn.conf.py).

    The access log is off: the Procfile writes it to stdout, which a benchmark
    would only throw away (it costs about 5 % of the web throughput).
    """

    name = "web"

    def __init__(self, *, env: dict, workers: int = 2, threads: int = 4):
        self.port = free_port()
        super().__init__(
            [
                str(VENV_BIN / "gunicorn"),
                "webhooks_project.wsgi",
                "--config",
                "gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
            ],
            env=env,
        )

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        """Start and wait until /health answers (at most 30 s)."""
        super().start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.check()
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer on {self.url}")

    def rss_kib(self) -> int:
        """Resident memory of the master and its workers together, KiB."""
        if self.proc is None:
            return 0
        return rss_kib(self.proc.pid) + sum(
            rss_kib(pid) for pid in children(self.proc.pid)
        )

    def worker_rss_kib(self) -> list[int]:
        """Resident memory of each gunicorn worker, KiB."""
        return [rss_kib(pid) for pid in children(self.proc.pid)] if self.proc else []

    def worker_cpu(self) -> dict[int, float]:
        """CPU seconds each gunicorn worker has used so far, by pid."""
        if self.proc is None:
            return {}
        return {pid: cpu_seconds(pid) for pid in children(self.proc.pid)}


class Worker(Process):
    """`celery -A webhooks_project worker` as in the Procfile, plus the no-op task.

    The Procfile's pool and concurrency by default; the benchmark varies them only
    where it says so. `--include bench.tasks` registers the no-op ceiling task.
    """

    name = "worker"

    def __init__(self, *, env: dict, pool: str = "threads", concurrency: int = 32):
        self.pool, self.concurrency = pool, concurrency
        super().__init__(
            [
                str(VENV_BIN / "celery"),
                "-A",
                "webhooks_project",
                "worker",
                "--loglevel",
                "INFO",
                "--pool",
                pool,
                "--concurrency",
                str(concurrency),
                "--include",
                "bench.tasks",
                "-n",
                f"bench-{uuid.uuid4().hex[:8]}@%h",
            ],
            env=env,
        )

    def start(self):
        """Start and give it a moment to import (readiness is checked by callers)."""
        super().start()
        time.sleep(0.5)
        self.check()
        return self

    def rss_kib(self) -> int:
        """Resident memory of the worker (its pool's children too, if any), KiB."""
        if self.proc is None:
            return 0
        return rss_kib(self.proc.pid) + sum(
            rss_kib(pid) for pid in children(self.proc.pid)
        )


class Beat(Process):
    """`celery beat` as in the Procfile: the sweeps every WEBHOOK_SWEEP_INTERVAL."""

    name = "beat"

    def __init__(self, *, env: dict):
        self.schedule = Path(tempfile.mkdtemp(prefix="bench-beat-")) / "schedule"
        super().__init__(
            [
                str(VENV_BIN / "celery"),
                "-A",
                "webhooks_project",
                "beat",
                "--loglevel",
                "WARNING",
                "--scheduler",
                "django_celery_beat.schedulers:DatabaseScheduler",
            ],
            env=env,
        )


class Workers:
    """Several worker processes and beat, started and stopped together.

    Beat belongs to the stack under test: its sweep brings back what flow
    control put off in the database.
    """

    def __init__(self, *, env: dict, processes: int, pool: str, concurrency: int):
        self.items = [
            Worker(env=env, pool=pool, concurrency=concurrency)
            for _ in range(processes)
        ]
        self.beat = Beat(env=env)

    def __enter__(self) -> "Workers":
        for worker in self.items:
            worker.start()
        self.beat.start()
        return self

    def __exit__(self, *exc) -> None:
        self.beat.stop()
        for worker in self.items:
            worker.stop()

    def check(self) -> None:
        """Raise if one exited."""
        for process in (*self.items, self.beat):
            process.check()

    def rss_kib(self) -> int:
        """Sum of their resident memory, KiB."""
        return sum(worker.rss_kib() for worker in self.items)
