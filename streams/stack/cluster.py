"""A replicated KRaft Apache Kafka cluster on loopback, from the same jars as the single broker.

``driftline stack up --brokers 3`` runs it: three nodes, each both broker and controller
(combined mode). Separate controllers would take six JVMs on a two-core machine; three combined
nodes still form a three-voter quorum, which survives the loss of any one node, and three
replicas of every partition, which survive it too. A cluster is:

1. configured: node ``i`` (1, 2, 3) gets its own client and controller ports on loopback and its
   own data folder, and every node the same static ``controller.quorum.voters``; on top of the
   single broker's settings (:func:`streams.stack.broker.server_properties`) come the durable
   defaults of :data:`DURABLE_SETTINGS` (three replicas, two in sync to accept a write, no
   unclean leader election);
2. formatted: every node's storage under the **same** cluster id, or they refuse each other;
3. started: all three before waiting for any, since no node answers before a quorum is elected;
4. waited for until each node answers a metadata request on its own address (the first wait is
   the longest: the others are ready, or nearly, by then).

A node is then stopped (SIGTERM: a controlled shutdown that moves its leaderships away first),
killed (SIGKILL: its leaderships move once the controller fences it) and restarted on the same
ports and data by :class:`streams.stack.LocalStack` for fault drills. The functions at the end
(:func:`partition_leader`, :func:`in_sync_replicas`, :func:`group_coordinator`,
:func:`active_controller`) tell those drills which node to kill and what to expect; they ask
whichever node answers, so they work while one is down.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from streams.stack import broker
from streams.stack.process import StackError, free_port

if TYPE_CHECKING:
    from kafka import KafkaAdminClient

__all__ = [
    "DURABLE_SETTINGS",
    "Node",
    "active_controller",
    "format_and_start",
    "group_coordinator",
    "in_sync_replicas",
    "new_nodes",
    "node_properties",
    "partition_leader",
    "quorum_voters",
    "start",
]

DURABLE_SETTINGS: Mapping[str, str] = {
    # Kafka's durable production defaults: three copies, a write (acks=all) needs two of them, so
    # one node may fail without losing a write or refusing one.
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    # A replica that fell behind never becomes leader: that would drop acknowledged writes.
    "unclean.leader.election.enable": "false",
    # The controller fences a node that has not sent a heartbeat for this long, and only then
    # moves its leaderships and shrinks the ISRs it is in: after a SIGKILL, that is how long
    # its partitions have no leader. Kafka's 9 s / 2 s are for real networks; on loopback 6 s /
    # 1 s fences sooner while still riding out a JVM pause of a node on a busy two-core machine.
    "broker.session.timeout.ms": "6000",
    "broker.heartbeat.interval.ms": "1000",
}
"""What a cluster node sets on top of the single broker's settings."""

_Answer = TypeVar("_Answer")

NODE_HEAP = "512m"
"""Maximum heap of each node: three of them share the machine (the single broker has 1 GiB)."""
NODE_INITIAL_HEAP = "128m"


@dataclass(frozen=True)
class Node:
    """One node of the cluster: its id, ports and folder (configuration, data, log)."""

    node_id: int
    port: int
    controller_port: int
    root: Path

    @property
    def layout(self) -> broker.BrokerLayout:
        return broker.BrokerLayout(self.root)


def new_nodes(
    root: Path, *, host: str, count: int = 3, first_port: int | None = None
) -> list[Node]:
    """Nodes 1 to ``count``, in ``root/kafka-<id>``, on distinct free ports (the first node's
    client port is ``first_port`` when given)."""
    taken = {first_port} if first_port else set()
    ports: list[int] = []
    while len(ports) < 2 * count - (1 if first_port else 0):
        # Two probes in a row may be handed the same free port: keep only new ones.
        port = free_port(host)
        if port not in taken:
            taken.add(port)
            ports.append(port)
    if first_port:
        ports.insert(0, first_port)
    return [
        Node(node_id, ports[2 * node_id - 2], ports[2 * node_id - 1], root / f"kafka-{node_id}")
        for node_id in range(1, count + 1)
    ]


def quorum_voters(nodes: Sequence[Node], *, host: str) -> str:
    """``controller.quorum.voters``: every node, ``id@host:controller_port``, by id."""
    ordered = sorted(nodes, key=lambda node: node.node_id)
    return ",".join(f"{node.node_id}@{host}:{node.controller_port}" for node in ordered)


def node_properties(node: Node, nodes: Sequence[Node], *, host: str) -> str:
    """``server.properties`` of ``node`` in the cluster of ``nodes``."""
    return broker.server_properties(
        host=host,
        port=node.port,
        controller_port=node.controller_port,
        data_dir=node.layout.data,
        node_id=node.node_id,
        quorum_voters=quorum_voters(nodes, host=host),
        overrides=DURABLE_SETTINGS,
    )


def format_and_start(nodes: Sequence[Node], *, host: str) -> dict[int, int]:
    """Configure and format every node under one new cluster id, then start them all.

    Returns each node's pid by node id, not yet ready: each answers once the three have elected
    a controller (:func:`streams.stack.broker.wait_until_ready` on its own address).
    """
    if len({node.node_id for node in nodes}) != len(nodes):
        raise StackError(f"node ids repeat: {[node.node_id for node in nodes]}")
    cluster_id = broker.new_cluster_id()
    for node in nodes:
        broker.configure(node.layout, node_properties(node, nodes, host=host))
        broker.format_storage(node.layout, cluster_id)
    return {node.node_id: start(node) for node in nodes}


def start(node: Node) -> int:
    """Start one configured and formatted node (again); returns its pid (not yet ready)."""
    return broker.start(node.layout, heap=NODE_HEAP, initial_heap=NODE_INITIAL_HEAP)


def _ask(
    kafka: Mapping[str, Any],
    question: Callable[[KafkaAdminClient], _Answer],
    *,
    timeout: float = 15.0,
) -> _Answer:
    """``question(admin)``, asked again on a retriable error until ``timeout`` seconds pass;
    raises :class:`StackError` (in one line, for the command line) when it is not answered.

    While a node is down, and until the controller fences it, metadata still names it, and
    kafka-python sends a request to it without trying another node: the next attempt goes to
    another (the dead one is then backing off).
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    settings = {"client_id": "driftline-stack-drill", "request_timeout_ms": 5_000, **kafka}
    deadline = time.monotonic() + timeout
    try:
        admin = KafkaAdminClient(**settings)
    except (KafkaError, OSError) as error:
        raise StackError(
            f"no Kafka node answers at {kafka.get('bootstrap_servers')}: {error}"
        ) from error
    try:
        while True:
            try:
                return question(admin)
            except (KafkaError, OSError) as error:
                if not getattr(error, "retriable", True) or time.monotonic() > deadline:
                    raise StackError(
                        f"the cluster at {kafka.get('bootstrap_servers')} did not answer: {error}"
                    ) from error
            time.sleep(0.2)
    finally:
        admin.close()


def _partition(kafka: Mapping[str, Any], topic: str, partition: int) -> dict[str, Any]:
    (described,) = _ask(kafka, lambda admin: admin.describe_topics([topic]))
    if described.get("error_code"):
        raise StackError(f"topic {topic!r} cannot be described (error {described['error_code']})")
    for entry in described["partitions"]:
        if entry["partition_index"] == partition:
            return dict(entry)
    raise StackError(f"topic {topic!r} has no partition {partition}")


def partition_leader(kafka: Mapping[str, Any], topic: str, partition: int) -> int:
    """The node id of the leader of ``topic``'s ``partition``; -1 while it has none.

    ``kafka`` holds kafka-python settings, at least ``bootstrap_servers`` (every node's address,
    so that any one that answers will do).
    """
    return int(_partition(kafka, topic, partition)["leader_id"])


def in_sync_replicas(kafka: Mapping[str, Any], topic: str, partition: int) -> list[int]:
    """The node ids of the in-sync replicas of ``topic``'s ``partition``, sorted."""
    return sorted(int(node) for node in _partition(kafka, topic, partition)["isr_nodes"])


def group_coordinator(kafka: Mapping[str, Any], group: str, *, timeout: float = 15.0) -> int:
    """The node id of the coordinator of consumer ``group`` (whether or not it has members),
    waiting up to ``timeout`` seconds for there to be one.

    kafka-python's admin client has no public FindCoordinator, so each live broker is asked to
    describe the group: every one but the coordinator answers ``NOT_COORDINATOR``. All of them
    do so while ``__consumer_offsets`` does not exist yet (a FindCoordinator creates it: a
    describe without a coordinator sends one) or while its partition's leader is being moved
    off a node that went down: then they are asked again.
    """
    from kafka.errors import KafkaError, NotCoordinatorError

    def coordinator(admin: KafkaAdminClient) -> int | None:
        brokers = sorted(int(b["broker_id"]) for b in admin.describe_cluster()["brokers"])
        for node_id in brokers:
            try:
                described = admin.describe_groups([group], group_coordinator_id=node_id)
            except (KafkaError, OSError):
                continue  # down, or not yet serving: another node will answer
            if NotCoordinatorError.__name__ not in (described[group].get("error") or ""):
                return node_id
        with contextlib.suppress(KafkaError, OSError):
            admin.describe_groups([group])
        return None

    deadline = time.monotonic() + timeout
    while (found := _ask(kafka, coordinator, timeout=timeout)) is None:
        if time.monotonic() > deadline:
            raise StackError(f"no live broker coordinates group {group!r}")
        time.sleep(0.5)
    return found


def active_controller(kafka: Mapping[str, Any]) -> int:
    """The node id of the active controller: the leader of the KRaft metadata quorum.

    Not DescribeCluster's ``controller_id``: in KRaft a broker answers that with a random live
    broker (clients send admin requests to it, and it forwards them), not the quorum leader.
    """
    quorum = _ask(kafka, lambda admin: admin.describe_metadata_quorum())
    leader = int(quorum["topics"][0]["partitions"][0]["leader_id"])
    if leader < 0:
        raise StackError("the metadata quorum has no leader (an election is under way)")
    return leader
