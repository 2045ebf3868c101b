"""A PostgreSQL primary and its streaming replica on 127.0.0.1, for tests.

Both are servers of their own beside the machine's (port 5432, never touched
here): initialised into one temporary directory with the machine's binaries, on
free ports, their sockets in that directory. The replica is a `pg_basebackup -R`
of the primary (standby.signal and primary_conninfo), streaming over a
`host replication` trust line. `close` stops each with `pg_ctl stop` on its own
data directory (SIGKILL to its postmaster's pid if that fails) and removes the
directory.

PostgreSQL refuses to run as root: as root, the binaries run as the `postgres`
system user, which then owns the directory.
"""

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.faults.stack import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
BINARIES = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
MACHINE_PORT = 5432  # the machine's own PostgreSQL: never used here
HOST = "127.0.0.1"
RUN_AS = "postgres"  # when this process is root
DATABASE = "webhooks"


def unavailable_reason() -> str | None:
    """Why a pair cannot run on this machine, or None when it can."""
    missing = [name for name in BINARIES if not (BIN / name).exists()]
    if missing:
        return f"PostgreSQL binaries not found in {BIN}: {', '.join(missing)}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root and there is no {RUN_AS!r} user to run PostgreSQL"
    return None


def _port() -> int:
    while (port := free_port()) == MACHINE_PORT:
        pass
    return port


class Server:
    """One PostgreSQL server of the pair: its data directory, port and log."""

    def __init__(self, *, name: str, base: Path):
        self.name = name
        self.data = base / name
        self.log = base / f"{name}.log"
        self.port = _port()

    def url(self, database: str = DATABASE) -> str:
        """The server's URL, for DATABASE_URL and DATABASE_REPLICA_URL."""
        return f"postgres://postgres@{HOST}:{self.port}/{database}"

    def sql(self, query: str, params=(), *, database: str = DATABASE) -> list[tuple]:
        """Run one statement in autocommit; its rows (empty when none)."""
        with psycopg.connect(
            host=HOST,
            port=self.port,
            user="postgres",
            dbname=database,
            autocommit=True,
            connect_timeout=5,
        ) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def postmaster_pid(self) -> int | None:
        """The pid of this server's postmaster while it runs, else None.

        Read from postmaster.pid, and only if that process runs `postgres -D`
        on this data directory (a stale file's pid may be another process's now).
        """
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        return pid if os.fsencode(self.data) in command else None


class PostgresPair:
    """A primary and its streaming replica: `with PostgresPair() as pair: ...`."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="whk-pg-pair-"))
        self.user = RUN_AS if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.base, self.user, self.user)
        self.primary = Server(name="primary", base=self.base)
        self.replica = Server(name="replica", base=self.base)

    def __enter__(self) -> "PostgresPair":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _run(self, name: str, *args: str, timeout: float = 60.0) -> None:
        done = subprocess.run(
            [str(BIN / name), *args],
            cwd=self.base,
            user=self.user,
            group=self.user,
            extra_groups=[] if self.user else None,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            raise RuntimeError(f"{name} failed:\n{done.stdout}{done.stderr}")

    def _configure(self, server: Server, lines: list[str]) -> None:
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(lines) + "\n")

    def start(self) -> None:
        """Initialise and start the primary, then clone and start the replica."""
        primary, replica = self.primary, self.replica
        self._run(
            "initdb",
            "-D",
            str(primary.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        self._configure(
            primary,
            [
                f"port = {primary.port}",
                f"listen_addresses = '{HOST}'",
                f"unix_socket_directories = '{self.base}'",
                "wal_level = replica",
                # A scratch database: nothing to keep across a crash.
                "fsync = off",
                "full_page_writes = off",
            ],
        )
        with (primary.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host replication all {HOST}/32 trust\n")
        self._start(primary)
        primary.sql(f"CREATE DATABASE {DATABASE}", database="postgres")
        self._run(
            "pg_basebackup",
            "-h",
            HOST,
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(replica.data),
            "-R",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-sync",
        )
        # The copied postgresql.conf names the primary's port; a later line wins.
        self._configure(replica, [f"port = {replica.port}", "hot_standby = on"])
        self._start(replica)
        self._wait(self._streaming, what="the replica to stream")

    def _start(self, server: Server) -> None:
        self._run(
            "pg_ctl", "-D", str(server.data), "-l", str(server.log), "-w", "start"
        )

    def _streaming(self) -> bool:
        rows = self.primary.sql(
            "SELECT 1 FROM pg_stat_replication WHERE state = 'streaming'"
        )
        return bool(rows)

    @staticmethod
    def _wait(predicate, *, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what}")
            time.sleep(0.05)

    def caught_up(self, timeout: float = 20.0) -> None:
        """Wait until the replica has replayed everything the primary wrote so far."""
        lsn = self.primary.sql("SELECT pg_current_wal_lsn()")[0][0]
        self._wait(
            lambda: self.replica.sql(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]
            )[0][0],
            what=f"the replica to replay up to {lsn}",
            timeout=timeout,
        )

    def pause_replay(self) -> None:
        """Stop applying WAL on the replica (it keeps answering reads)."""
        self.replica.sql("SELECT pg_wal_replay_pause()")
        self._wait(
            lambda: (
                self.replica.sql("SELECT pg_get_wal_replay_pause_state()")[0][0]
                == "paused"
            ),
            what="replay to pause",
        )

    def resume_replay(self) -> None:
        """Apply WAL on the replica again."""
        self.replica.sql("SELECT pg_wal_replay_resume()")

    def stop(self, server: Server, mode: str = "fast") -> None:
        """Stop one server with pg_ctl on its own data directory."""
        self._run(
            "pg_ctl", "-D", str(server.data), "-m", mode, "-w", "stop", timeout=30
        )

    def close(self) -> None:
        """Stop both servers (by pid if pg_ctl cannot) and remove the directory."""
        for server in (self.replica, self.primary):
            if server.postmaster_pid() is None:
                continue
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop(server, mode="immediate")
            if (pid := server.postmaster_pid()) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)
