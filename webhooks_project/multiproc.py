"""Prometheus multiprocess files named per host and process, not per pid alone.

prometheus-client names each process's samples file after its pid. Containers
sharing one PROMETHEUS_MULTIPROC_DIR (docker-compose.yml: web, worker and beat)
each have their own pid namespace, so two of them would write into the same
`counter_1.db` at once. Prefixing the host name (a container's id) keeps every
running process's file its own; on one machine the prefix is simply constant.
"""

import functools
import os
import socket

from prometheus_client import values


@functools.cache
def _host() -> str:
    return socket.gethostname().replace("_", "-") or "localhost"


def process_identifier(pid: int | None = None) -> str:
    """`<host>-<pid>` for `pid` (default: this process), without underscores.

    prometheus-client splits file names on `_`, so the name may not contain one.
    It asks for this on every sample it writes: the host name is read once.
    """
    return f"{_host()}-{os.getpid() if pid is None else pid}"


def shared() -> bool:
    """Whether processes share their metrics (PROMETHEUS_MULTIPROC_DIR set)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def use_host_qualified_files() -> None:
    """Make metrics created from now on write `<type>_<host>-<pid>.db` files."""
    if shared():
        values.ValueClass = values.MultiProcessValue(
            process_identifier=process_identifier
        )
