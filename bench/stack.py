"""The processes a benchmark starts: gunicorn, Celery workers, receivers.

Each is started on 127.0.0.1 with the bench settings and stopped by its own pid
(SIGTERM, then SIGKILL of its process group after a grace period); nothing else
is ever signalled. Starting, logging and stopping are the fault suite's
(tests/faults/stack.py); this adds the bench's log directory, memory and CPU
readings, and context managers.
"""

import os
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from bench.harness import BENCH_ENV, REPO
from tests.faults import stack
from tests.faults.stack import free_port

VENV_BIN = Path(sys.executable).parent
LOG_DIR = Path(tempfile.gettempdir()) / "webhooks-bench"
STOP_GRACE = 20  # seconds between SIGTERM and SIGKILL


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


class Process(stack.Process):
    """A subprocess of the benchmark, logged under /tmp/webhooks-bench."""

    kind = "process"  # the start of its name and its log's

    def __init__(self, args: list[str], *, env: dict[str, str]):
        LOG_DIR.mkdir(exist_ok=True)
        name = f"{self.kind}-{uuid.uuid4().hex[:6]}"
        super().__init__(name=name, args=args, env=env, log_dir=LOG_DIR)

    def check(self) -> None:
        """Raise with the log's tail if the process exited."""
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            raise RuntimeError(f"{self.name} exited ({code}):\n{self.tail()}")

    def stop(self, timeout: float = STOP_GRACE) -> None:
        """SIGTERM, then SIGKILL its process group after `timeout` seconds."""
        super().stop(timeout)

    def rss_kib(self) -> int:
        """Resident memory of the process and its direct children, KiB."""
        if self.proc is None:
            return 0
        return rss_kib(self.proc.pid) + sum(rss_kib(pid) for pid in self.children())

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
        "PYTHONPATH": str(REPO),
        **(extra or {}),
    }


class Web(Process):
    """gunicorn as in the Procfile (2 workers x 4 threads, gunicorn.conf.py).

    The access log is off: the Procfile writes it to stdout, which a benchmark
    would only throw away (it costs about 5 % of the web throughput).
    """

    kind = "web"

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

    def ready(self, mark: int) -> bool:
        """Ready once /health answers."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                return True
        except OSError:
            return False

    def worker_rss_kib(self) -> list[int]:
        """Resident memory of each gunicorn worker, KiB."""
        return [rss_kib(pid) for pid in self.children()]

    def worker_cpu(self) -> dict[int, float]:
        """CPU seconds each gunicorn worker has used so far, by pid."""
        return {pid: cpu_seconds(pid) for pid in self.children()}


class Worker(Process):
    """`celery -A webhooks_project worker` as in the Procfile, plus the no-op task.

    The Procfile's pool and concurrency by default; the benchmark varies them only
    where it says so. `--include bench.tasks` registers the no-op ceiling task.
    """

    kind = "worker"

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

    def start(self, timeout: float = 60.0):
        """Start and give it a moment to import.

        Callers check readiness (a no-op task run): at the bench's log level a
        worker does not log that it is ready.
        """
        super().start(timeout)
        time.sleep(0.5)
        self.check()
        return self


class Beat(Process):
    """`celery beat` as in the Procfile: the sweeps every WEBHOOK_SWEEP_INTERVAL."""

    kind = "beat"

    def __init__(self, *, env: dict):
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
