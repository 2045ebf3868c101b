"""The fault suite's cluster mode (`--cluster`): the broker is a three-node cluster.

    .venv/bin/python -m tests.faults --cluster --short   # part of `make test`
    .venv/bin/python -m tests.faults --cluster           # the long run

The cluster is tests/cluster's RabbitCluster: nodes rabbit-c1..c3@localhost on
127.0.0.1:5681-5683 with their own data directories and Erlang cookie (the
machine's RabbitMQ is left alone), the project's quorum queues with a member on
each node. Web, workers, beat and this process reach it through a failover list
(CELERY_BROKER_URL holding the three URLs, as Celery and kombu take it).

The faults, in turn while the producers publish and the workers deliver: the node
leading the delivery queue is SIGKILLed; later the node leading it then is stopped
gracefully (`rabbitmqctl stop`); each is started again `--broker-down` seconds
later and rejoins. The long run also takes the cluster below quorum: the two
other nodes are stopped gracefully for 3 x `--broker-down` seconds, then started
together (nothing can be confirmed meanwhile: publishes fail or wait, and the
rows wait for the sweep). For each fault, the figures of recovery: seconds until
the queue has a new leader, until the nodes are back in the cluster, and the
longest pause in 2xx answers at the steady receivers until the next fault.
"""

import itertools
import time
from dataclasses import dataclass, field

from tests.cluster.rabbit_cluster import ClusterError, RabbitCluster

CLUSTER_FAULTS = ("cluster-kill-leader", "cluster-stop-node", "cluster-no-quorum")
# The short run's: the no-quorum fault holds every publish for its whole window.
SHORT_CLUSTER_FAULTS = CLUSTER_FAULTS[:2]
# The window after a fault in which the pause in deliveries is looked for.
PAUSE_WINDOW = 60.0


@dataclass
class Recovery:
    """What one cluster fault did and how long coming back took (seconds)."""

    fault: str
    node: str
    at: float  # monotonic
    new_leader: float | None = None
    back: float | None = None
    longest_pause: float | None = None

    def line(self) -> str:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        return (
            f"{self.fault} {self.node}: new leader {seconds(self.new_leader)} s,"
            f" node back {seconds(self.back)} s,"
            f" longest pause in 2xx answers {seconds(self.longest_pause)} s"
        )


@dataclass
class ClusterBroker:
    """The cluster of a run, its faults and their recoveries."""

    cluster: RabbitCluster = field(default_factory=RabbitCluster)
    recoveries: list[Recovery] = field(default_factory=list)
    started_in: float = 0.0

    @property
    def queue(self) -> str:
        """The delivery queue (its name has the run's prefix: read once set up)."""
        from webhooks_project.queues import DELIVERIES_QUEUE

        return DELIVERIES_QUEUE

    def start(self) -> str:
        """Boot and join the nodes; the failover list for CELERY_BROKER_URL."""
        self.started_in = self.cluster.start()
        return self.cluster.broker_url()

    def await_replicas(self) -> None:
        """Wait until the delivery queue (declared by now) has all three members."""
        self.cluster.await_members(self.queue, len(self.cluster.nodes))

    def kill_leader(self, *, down: float) -> bool:
        """SIGKILL the delivery queue's leader, start it again after `down` s."""
        return self._fault("cluster-kill-leader", self.cluster.kill, down=down)

    def stop_leader(self, *, down: float) -> bool:
        """Stop the delivery queue's leader gracefully, start it after `down` s."""
        return self._fault("cluster-stop-node", self.cluster.stop, down=down)

    def no_quorum(self, *, down: float) -> bool:
        """Stop both nodes but the leader (no quorum), start them after `down` s."""
        leader = self.cluster.leader(self.queue)
        others = [node for node in self.cluster.nodes if node is not leader]
        names = "+".join(node.short for node in others)
        recovery = Recovery(fault="cluster-no-quorum", node=names, at=time.monotonic())
        self.recoveries.append(recovery)
        for node in others:
            self.cluster.stop(node)
        time.sleep(max(0.0, down - (time.monotonic() - recovery.at)))
        self._restart(recovery, *others)
        return True

    def _fault(self, name: str, act, *, down: float) -> bool:
        leader = self.cluster.leader(self.queue)
        recovery = Recovery(fault=name, node=leader.short, at=time.monotonic())
        self.recoveries.append(recovery)
        act(leader)
        recovery.new_leader = self._await_new_leader(leader, since=recovery.at)
        time.sleep(max(0.0, down - (time.monotonic() - recovery.at)))
        self._restart(recovery, leader)
        return True

    def _restart(self, recovery: Recovery, *nodes) -> None:
        restarted = time.monotonic()
        self.cluster.restart(*nodes)
        for node in nodes:
            self.cluster.stopped.discard(node.name)
        self.await_replicas()
        recovery.back = time.monotonic() - restarted

    def _await_new_leader(self, old, *, since: float) -> float | None:
        deadline = since + 30
        while time.monotonic() < deadline:
            try:
                if self.cluster.leader(self.queue).name != old.name:
                    return time.monotonic() - since
            except (ClusterError, KeyError):
                pass  # between leaders
            time.sleep(0.1)
        return None

    def heal(self) -> None:
        """Start every node a fault left stopped."""
        down = [node for node in self.cluster.nodes if not node.running]
        if down:
            self.cluster.restart(*down)
            for node in down:
                self.cluster.stopped.discard(node.name)

    def report(self, receivers, *, published_at: float) -> None:
        """Print each fault's recovery, with the longest pause between 2xx answers
        of the steady receivers from the last before it until the next fault,
        PAUSE_WINDOW seconds or the end of publishing (`published_at`), which
        comes first."""
        steady = [r for r in receivers if r.behaviour == "steady"]
        times = sorted(t for receiver in steady for t in receiver.answered)
        nexts = [r.at for r in self.recoveries[1:]] + [float("inf")]
        for recovery, next_at in zip(self.recoveries, nexts, strict=True):
            end = min(recovery.at + PAUSE_WINDOW, next_at, published_at)
            before = [t for t in times if t < recovery.at][-1:] or [recovery.at]
            inside = [t for t in times if recovery.at <= t <= end]
            if inside:
                pairs = itertools.pairwise([*before, *inside])
                recovery.longest_pause = max(b - a for a, b in pairs)
            print(f"fault suite cluster: {recovery.line()}")

    def teardown(self) -> None:
        self.cluster.teardown()
