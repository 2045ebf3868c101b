"""CPU time by process group, read from /proc: where a request's cost goes.

A snapshot maps every process to a group by its name and command line (gunicorn,
Celery workers and beat, PostgreSQL, RabbitMQ, Redis, wrk, this harness with its
receivers and paced client; wrk, which has ended by then, as the harness's
waited-for children); the difference of two snapshots is each group's CPU
seconds in between, and the machine's busy time from /proc/stat beside them.
Processes that ended in between lose their share: the stack's are long-lived.
Only the benchmark's own are counted in its groups, so that other work on the
machine (a test run beside it) lands in `other`: gunicorn and Celery processes
that descend from this harness, and PostgreSQL backends of its databases.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import BENCH_DB, busy_cpu_seconds

GROUPS = (
    "web",
    "workers",
    "beat",
    "postgres",
    "rabbitmq",
    "redis",
    "load",
    "harness",
    "other",
)
_TICK = os.sysconf("SC_CLK_TCK")


def _group(pid: int, name: str, cmdline: str, *, ours: bool) -> str:
    if pid == os.getpid():
        return "harness"
    if "gunicorn" in cmdline and ours:
        return "web"
    if "celery" in cmdline and ours:
        return "beat" if " beat" in cmdline else "workers"
    if name.startswith("postgres") or cmdline.startswith("postgres"):
        # A backend's title: "postgres: USER DATABASE HOST(PORT) STATE".
        parts = cmdline.split()
        backend = len(parts) >= 4 and parts[0] == "postgres:" and "(" in parts[3]
        return "other" if backend and not parts[2].startswith(BENCH_DB) else "postgres"
    if name in ("beam.smp", "erl_child_setup", "epmd", "inet_gethost"):
        return "rabbitmq"
    if name.startswith("redis-server"):
        return "redis"
    if name == "wrk":
        return "load"
    return "other"


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds so far of every process, by pid, with its group."""

    processes: dict[int, tuple[str, float]]
    busy: float
    at: float  # time.time() when taken

    @classmethod
    def take(cls) -> "Snapshot":
        """Read /proc now."""
        at, processes, read = time.time(), {}, {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue  # ended meanwhile
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            read[int(entry.name)] = (name, fields, cmdline.decode(errors="replace"))
        parents = {pid: int(fields[1]) for pid, (_, fields, _) in read.items()}
        for pid, (name, fields, cmdline) in read.items():
            seconds = (int(fields[11]) + int(fields[12])) / _TICK
            group = _group(pid, name, cmdline, ours=_descends(pid, parents))
            processes[pid] = (group, seconds)
            if group == "harness":  # wrk: a child it ran and waited for
                children = (int(fields[13]) + int(fields[14])) / _TICK
                processes[-1] = ("load", children)
        return cls(processes=processes, busy=busy_cpu_seconds(), at=at)

    def since(self, before: "Snapshot") -> dict[str, float]:
        """CPU seconds of each group from `before` to this one, and `machine`."""
        spent = dict.fromkeys(GROUPS, 0.0)
        for pid, (group, seconds) in self.processes.items():
            earlier = before.processes.get(pid)
            start = earlier[1] if earlier and earlier[0] == group else 0.0
            spent[group] += max(0.0, seconds - start)
        spent["machine"] = self.busy - before.busy
        return spent


def _descends(pid: int, parents: dict[int, int]) -> bool:
    """Whether `pid` is this process or one of its descendants."""
    mine = os.getpid()
    while pid > 1:
        if pid == mine:
            return True
        pid = parents.get(pid, 0)
    return False


def per_item(spent: dict[str, float], count: int) -> dict[str, float]:
    """Microseconds of each group per item (a request, an event, a delivery)."""
    return {group: 1e6 * seconds / max(count, 1) for group, seconds in spent.items()}
