"""A three-node RabbitMQ cluster on 127.0.0.1 for tests, started and stopped by pid.

Each node is a RabbitMQ of its own beside the machine's (rabbit@localhost on
5672, which this module never touches): its own node name (rabbit-c1@localhost
...), AMQP port (5681...), distribution port (25681...), data and log
directories under one temporary directory, an empty plugins file, and an Erlang
cookie of its own in a HOME of its own. The machine's epmd (4369) is shared:
it only maps node names to ports, and nothing here stops it.

The real scripts are run as the current user, not Debian's /usr/sbin wrappers
(those `su rabbitmq` with the machine's HOME and cookie, and log into
/var/log/rabbitmq). A node runs in the foreground under `rabbitmq-server`, a
shell that starts the Erlang VM (beam.smp) as its child; `kill` SIGKILLs that
beam by pid, `stop` asks the node to stop (`rabbitmqctl stop`), `restart`
boots it again on the same data directory, where it rejoins the cluster.
`teardown` (also run at exit) ends every node by pid and removes the
directory. Nodes left behind by a run that was itself killed are found by their
directory (`-home` on beam's command line) and ended by the next run.

    python -m tests.cluster.rabbit_cluster   # start one, print its URL, Ctrl-C
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
MACHINE_AMQP_PORT = 5672  # the machine's own RabbitMQ: never used here
AMQP_PORTS = (5681, 5682, 5683)
DIST_PORT_OFFSET = 20000  # RabbitMQ's own default: 25681, 25682, 25683
# Ports of the CLI tools' own Erlang nodes (not the machine's 35672-35682).
CTL_DIST_PORTS = (35690, 35699)
NAME_PREFIX = "rabbit-c"
BASE_PREFIX = "whk-rabbit-cluster-"
# Where Debian keeps the real scripts; /usr/sbin has wrappers that `su rabbitmq`.
SCRIPT_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/lib/rabbitmq/sbin")
BOOT_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


class ClusterError(RuntimeError):
    """A node did not start, join, stop or answer in time."""


def script_dir() -> Path | None:
    """The directory of the real rabbitmq-server and rabbitmqctl, if any."""
    candidates = [os.environ.get("RABBITMQ_SCRIPTS"), *SCRIPT_DIRS]
    server = shutil.which("rabbitmq-server")
    if server:
        candidates.append(str(Path(server).resolve().parent))
    for candidate in filter(None, candidates):
        path = Path(candidate)
        server_script = path / "rabbitmq-server"
        if not (server_script.exists() and (path / "rabbitmqctl").exists()):
            continue
        with contextlib.suppress(OSError):
            if "su rabbitmq" in server_script.read_text(errors="replace"):
                continue  # Debian's wrapper: it would run as the machine's node
        return path
    return None


def missing_reason() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    for tool in ("rabbitmq-server", "rabbitmqctl", "erl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install rabbitmq-server)"
    if script_dir() is None:
        return "no rabbitmq-server script outside Debian's su wrapper was found"
    return None


def version() -> str:
    """RabbitMQ's version, from the installed server's directory name."""
    scripts = script_dir()
    if scripts is None:
        return "unknown"
    home = (scripts / "rabbitmq-server").resolve().parent.parent.name
    return home.removeprefix("rabbitmq_server-") or "unknown"


def port_open(port: int, host: str = HOST) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie no longer runs
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def _beams() -> dict[int, str]:
    """Running Erlang VMs and the `-home` each was given: {pid: home}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = _cmdline(int(entry.name))
        if not args or "beam" not in Path(args[0]).name:
            continue
        with contextlib.suppress(ValueError, IndexError):
            found[int(entry.name)] = args[args.index("-home") + 1]
    return found


def reap_stale() -> list[int]:
    """SIGKILL nodes of earlier runs whose owner is gone; returns their pids.

    Only VMs whose home lies in a directory made by this module are looked at,
    and only when the process that made the directory no longer runs.
    """
    killed = []
    for pid, home in _beams().items():
        base = Path(home).parent.parent
        if not base.name.startswith(BASE_PREFIX):
            continue
        try:
            owner = int((base / "owner.pid").read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and _pid_alive(owner):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        shutil.rmtree(base, ignore_errors=True)
    return killed


def _wait(predicate, *, what: str, timeout: float, interval: float = 0.2) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise ClusterError(f"{what} within {timeout:.0f} s")


@dataclass
class Node:
    """One RabbitMQ node of the cluster."""

    index: int
    name: str  # Erlang node name, e.g. rabbit-c1@localhost
    amqp_port: int
    dist_port: int
    dir: Path
    process: subprocess.Popen | None = None  # the rabbitmq-server shell
    beam_pid: int | None = None
    boots: int = 0
    started_at: float = field(default=0.0)

    @property
    def short(self) -> str:
        return self.name.split("@")[0]

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def running(self) -> bool:
        return self.beam_pid is not None and _pid_alive(self.beam_pid)

    def url(self, user: str = "guest", password: str = "guest") -> str:
        return f"amqp://{user}:{password}@{HOST}:{self.amqp_port}//"


class RabbitCluster:
    """Three (or `size`) RabbitMQ nodes on 127.0.0.1, joined into one cluster."""

    def __init__(
        self,
        size: int = 3,
        *,
        ports: tuple[int, ...] = AMQP_PORTS,
        prefix: str = NAME_PREFIX,
        base_dir: Path | None = None,
        keep_dir: bool = False,
    ) -> None:
        if len(ports) < size:
            raise ValueError("one AMQP port per node")
        if MACHINE_AMQP_PORT in ports:
            raise ValueError("5672 is the machine's own RabbitMQ")
        scripts = script_dir()
        if scripts is None:
            raise ClusterError(missing_reason() or "RabbitMQ scripts not found")
        self.scripts = scripts
        self.keep_dir = keep_dir
        self.base = Path(base_dir or tempfile.mkdtemp(prefix=BASE_PREFIX))
        self.nodes = [
            Node(
                index=i,
                name=f"{prefix}{i + 1}@localhost",
                amqp_port=ports[i],
                dist_port=ports[i] + DIST_PORT_OFFSET,
                dir=self.base / f"{prefix.rstrip('-')}{i + 1}",
            )
            for i in range(size)
        ]
        self.stopped: set[str] = set()  # nodes stopped on purpose (kill or stop)
        self._torn_down = False
        self._lock = threading.Lock()
        self.epmd_shared = port_open(4369)
        atexit.register(self.teardown)

    # --- set-up -----------------------------------------------------------
    def _write_files(self) -> None:
        (self.base / "owner.pid").write_text(str(os.getpid()))
        (self.base / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's
        (self.base / "enabled_plugins").write_text("[].\n")  # no management
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(32))
        homes = [self.base / "ctl-home", *(node.home for node in self.nodes)]
        for home in homes:
            home.mkdir(parents=True, exist_ok=True)
            path = home / ".erlang.cookie"
            path.write_text(cookie)
            path.chmod(0o400)
        for node in self.nodes:
            (node.dir / "log").mkdir(parents=True, exist_ok=True)
            (node.dir / "rabbitmq.conf").write_text(
                "\n".join(
                    [
                        f"listeners.tcp.1 = {HOST}:{node.amqp_port}",
                        "log.console = false",
                        "log.file.level = info",
                        # The machine's other tenants: no disk alarm on a
                        # busy disk, and a quarter of the memory each at most.
                        "disk_free_limit.absolute = 50MB",
                        "vm_memory_high_watermark.relative = 0.25",
                        "",
                    ]
                )
            )

    def _base_env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_"))
        }
        env.update(
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_CTL_DIST_PORT_MIN=str(CTL_DIST_PORTS[0]),
            RABBITMQ_CTL_DIST_PORT_MAX=str(CTL_DIST_PORTS[1]),
            ERL_EPMD_ADDRESS=HOST,
            LC_ALL="C.UTF-8",
        )
        return env

    def _node_env(self, node: Node) -> dict[str, str]:
        env = self._base_env()
        env.update(
            HOME=str(node.home),
            RABBITMQ_NODENAME=node.name,
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(node.amqp_port),
            RABBITMQ_DIST_PORT=str(node.dist_port),
            RABBITMQ_CONFIG_FILE=str(node.dir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(node.dir / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(node.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(node.dir / "log"),
            RABBITMQ_PID_FILE=str(node.dir / "beam.pid"),
            # Erlang distribution on loopback only, as the machine's node.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                "-kernel inet_dist_use_interface {127,0,0,1}"
            ),
        )
        return env

    def start(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Boot every node, join them to the first, wait; returns seconds taken."""
        started = time.monotonic()
        reap_stale()
        for node in self.nodes:
            for port in (node.amqp_port, node.dist_port):
                if port_open(port):
                    raise ClusterError(f"port {port} for {node.name} is taken")
        self._write_files()
        for node in self.nodes:
            self._boot(node)
        for node in self.nodes:
            self._await_boot(node, timeout=timeout)
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl("stop_app", node=node)
            self.ctl("join_cluster", seed.name, node=node)
            self.ctl("start_app", node=node)
        self.await_running(self.nodes, timeout=timeout)
        return time.monotonic() - started

    def _boot(self, node: Node) -> None:
        if node.process is not None and node.process.poll() is None:
            raise ClusterError(f"{node.name} is still running")
        with contextlib.suppress(FileNotFoundError):
            (node.dir / "beam.pid").unlink()
        log = (node.dir / "log" / "console.log").open("ab")
        try:
            node.process = subprocess.Popen(
                [str(self.scripts / "rabbitmq-server")],
                env=self._node_env(node),
                cwd=node.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal is ours alone
            )
        finally:
            log.close()
        node.beam_pid = None
        node.boots += 1
        node.started_at = time.monotonic()
        self.stopped.discard(node.name)

    def _find_beam(self, node: Node) -> int | None:
        for pid, home in _beams().items():
            if home == str(node.home):
                return pid
        return None

    def _await_boot(self, node: Node, *, timeout: float) -> None:
        def booted() -> bool:
            if node.process is not None and node.process.poll() is not None:
                raise ClusterError(
                    f"{node.name} exited ({node.process.returncode}):\n"
                    + self.log_tail(node)
                )
            if node.beam_pid is None:
                node.beam_pid = self._find_beam(node)
            return node.beam_pid is not None and port_open(node.amqp_port)

        _wait(booted, what=f"{node.name} did not open its AMQP port", timeout=timeout)
        self.ctl("await_startup", "--timeout", str(int(timeout)), node=node)

    # --- the CLI ----------------------------------------------------------
    def ctl(
        self,
        *args: str,
        node: Node | None = None,
        tool: str = "rabbitmqctl",
        timeout: float = 90.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run rabbitmqctl (or rabbitmq-queues, rabbitmq-diagnostics) on a node."""
        target = node or self.any_running()
        env = self._base_env()
        env["HOME"] = str(self.base / "ctl-home")
        result = subprocess.run(
            [str(self.scripts / tool), "-n", target.name, *args],
            env=env,
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"{tool} -n {target.name} {' '.join(args)} failed "
                f"({result.returncode}): {result.stderr.strip() or result.stdout}"
            )
        return result

    def any_running(self) -> Node:
        for node in self.nodes:
            if node.name not in self.stopped and node.running:
                return node
        raise ClusterError("no node of the cluster is running")

    def running_nodes(self, via: Node | None = None) -> set[str]:
        """The nodes the cluster itself reports as running."""
        out = self.ctl("cluster_status", "--formatter", "json", node=via).stdout
        return set(json.loads(out).get("running_nodes", []))

    def await_running(self, nodes: list[Node], timeout: float = BOOT_TIMEOUT) -> float:
        """Wait until the cluster reports every one of `nodes` running."""
        names = {node.name for node in nodes}
        return _wait(
            lambda: names <= self.running_nodes(),
            what=f"{sorted(names)} not all running in the cluster",
            timeout=timeout,
            interval=0.5,
        )

    def queue_info(self, queue: str, vhost: str = "/") -> dict:
        """name, type, leader, members and online members of one queue."""
        out = self.ctl(
            "list_queues",
            "-p",
            vhost,
            "name",
            "type",
            "leader",
            "members",
            "online",
            "messages",
            "--formatter",
            "json",
            "-q",
        ).stdout
        for row in json.loads(out or "[]"):
            if row.get("name") == queue:
                return row
        raise ClusterError(f"queue {queue} not found")

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def leader(self, queue: str) -> Node:
        """The node whose member of the quorum queue `queue` leads it now."""
        return self.node(self.queue_info(queue)["leader"])

    def await_members(self, queue: str, count: int, timeout: float = 60.0) -> float:
        """Wait until `count` members of the quorum queue are online."""

        def online() -> bool:
            info = self.queue_info(queue)
            return len(info.get("online") or []) >= count and bool(info.get("leader"))

        return _wait(
            online,
            what=f"{queue}: {count} members online",
            timeout=timeout,
            interval=0.5,
        )

    def urls(self, first: Node | None = None) -> list[str]:
        """Every node's AMQP URL, `first` first and the others in order after."""
        order = sorted(self.nodes, key=lambda n: (n is not first, n.index))
        return [node.url() for node in order]

    def broker_url(self, first: Node | None = None) -> str:
        """The failover list as CELERY_BROKER_URL takes it (';' between URLs)."""
        return ";".join(self.urls(first))

    # --- faults -----------------------------------------------------------
    def kill(self, node: Node) -> None:
        """SIGKILL the node's Erlang VM by pid and wait until it is gone."""
        pid = node.beam_pid or self._find_beam(node)
        if pid is None:
            raise ClusterError(f"{node.name} has no running VM")
        self.stopped.add(node.name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait(lambda: not _pid_alive(pid), what=f"{node.name} did not die", timeout=30)
        self._reap(node)

    def stop(self, node: Node, timeout: float = STOP_TIMEOUT) -> float:
        """Stop the node gracefully (`rabbitmqctl stop`); returns seconds taken."""
        started = time.monotonic()
        pid = node.beam_pid or self._find_beam(node)
        self.stopped.add(node.name)
        self.ctl("stop", node=node, timeout=timeout)
        if pid is not None:
            _wait(
                lambda: not _pid_alive(pid),
                what=f"{node.name} did not stop",
                timeout=timeout,
            )
        self._reap(node)
        return time.monotonic() - started

    def restart(self, *nodes: Node, timeout: float = BOOT_TIMEOUT) -> float:
        """Boot stopped nodes again (together); back in the cluster when it returns."""
        started = time.monotonic()
        for node in nodes:
            self._boot(node)
        for node in nodes:
            self._await_boot(node, timeout=timeout)
        self.await_running(list(nodes), timeout=timeout)
        return time.monotonic() - started

    def _reap(self, node: Node) -> None:
        """Collect the node's shell once its VM is gone."""
        node.beam_pid = None
        if node.process is None:
            return
        try:
            node.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.process.pid, signal.SIGKILL)
            node.process.wait(timeout=15)
        node.process = None

    def log_tail(self, node: Node, lines: int = 30) -> str:
        parts = []
        for path in sorted((node.dir / "log").glob("*.log")):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def teardown(self) -> None:
        """End every node by pid (SIGTERM, then SIGKILL), remove the directory."""
        with self._lock:
            if self._torn_down:
                return
            self._torn_down = True
        pids = {}
        for node in self.nodes:
            pid = node.beam_pid or self._find_beam(node)
            if pid is not None:
                pids[pid] = node
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
            time.sleep(0.2)
        for pid in pids:
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self._reap(node)
        if not self.keep_dir:
            shutil.rmtree(self.base, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.teardown)


def main() -> None:
    """Start a cluster, print its broker URL, stop it on Ctrl-C."""
    reason = missing_reason()
    if reason:
        raise SystemExit(reason)
    cluster = RabbitCluster()
    try:
        took = cluster.start()
        print(f"RabbitMQ {version()}: 3 nodes up in {took:.1f} s")
        print(f"CELERY_BROKER_URL='{cluster.broker_url()}'")
        print("Ctrl-C stops them.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.teardown()


if __name__ == "__main__":
    main()
