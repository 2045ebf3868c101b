"""The processes of a fault run: gunicorn web, Celery workers and beat, by pid."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """One started subprocess with its log; stopped and killed only by its pid."""

    def __init__(self, *, name: str, args: list[str], env: dict, log_dir: Path):
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The pid of the running process, None when it is not running."""
        return self.proc.pid if self.running else None

    @property
    def running(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def launch(self) -> int:
        """Start the process (its own session, output to its log) without waiting.

        Returns the log's size before it: what `ready` reads after.
        """
        mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        return mark

    def start(self, timeout: float = 60.0) -> "Process":
        """Start the process and wait until it is ready."""
        mark = self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.tail()}")
            if self.ready(mark):
                return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"{self.name} not ready in {timeout:.0f} s:\n{self.tail()}")

    def ready(self, mark: int) -> bool:
        """True once the process can do its job (subclasses know how to tell)."""
        return True

    def log_since(self, mark: int) -> bytes:
        """What the process logged after byte offset `mark`."""
        with self.log_path.open("rb") as log:
            log.seek(mark)
            return log.read()

    def tail(self, size: int = 3000) -> str:
        """The end of the process log."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")

    def children(self) -> list[int]:
        """Pids of the process's direct children (e.g. prefork pool processes)."""
        if not self.running:
            return []
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def signal(self, sig: int) -> None:
        """Send `sig` to the process itself (not to its group)."""
        if self.running:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the process to end; True if it did."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (warm shutdown), then SIGKILL the group if it does not end."""
        if not self.running:
            return
        self.proc.send_signal(signal.SIGTERM)
        if not self.wait(timeout):
            self.kill()

    def kill(self) -> None:
        """SIGKILL the process and the pool processes it started."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.wait(10)


class Web(Process):
    """gunicorn serving the API, as the Procfile runs it."""

    def __init__(self, *, env: dict, log_dir: Path, workers: int = 2):
        self.port = free_port()
        args = [
            sys.executable,
            "-m",
            "gunicorn",
            "webhooks_project.wsgi",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            "--threads",
            "4",
            "--timeout",
            "60",
        ]
        super().__init__(name="web", args=args, env=env, log_dir=log_dir)

    @property
    def url(self) -> str:
        """The base URL of the API."""
        return f"http://127.0.0.1:{self.port}"

    def ready(self, mark: int) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False


class Worker(Process):
    """A Celery worker with the given pool, consuming `queues` (default: every one).

    Its node name is `node`, or one made from `name` on localhost.
    """

    def __init__(
        self,
        *,
        name: str,
        pool: str,
        concurrency: int,
        env: dict,
        log_dir: Path,
        node: str | None = None,
        queues: Iterable[str] = (),
    ):
        self.node = node or f"{name}-{uuid.uuid4().hex[:6]}@localhost"
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "webhooks_project",
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "-n",
            self.node,
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ]
        if queues:
            args += ["-Q", ",".join(queues)]
        super().__init__(name=name, args=args, env=env, log_dir=log_dir)

    def ready(self, mark: int) -> bool:
        return b" ready." in self.log_since(mark)


class Beat(Process):
    """celery beat with the database scheduler, as the Procfile runs it."""

    def __init__(self, *, env: dict, log_dir: Path):
        self.schedule_dir = log_dir
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "webhooks_project",
            "beat",
            "--loglevel",
            "INFO",
            "--scheduler",
            "django_celery_beat.schedulers:DatabaseScheduler",
            "--pidfile",
            "",
        ]
        super().__init__(name="beat", args=args, env=env, log_dir=log_dir)

    def ready(self, mark: int) -> bool:
        return b"beat: Starting" in self.log_since(mark)
