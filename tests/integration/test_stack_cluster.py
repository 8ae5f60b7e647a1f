"""``driftline stack up --brokers 3`` and its node drills, as a user runs them, on a stack of its
own: three real KRaft nodes, one of them SIGKILLed while it leads a partition."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from pipeline import wait_for

from streams.stack import LocalStack
from streams.stack.cluster import (
    active_controller,
    group_coordinator,
    in_sync_replicas,
    partition_leader,
)
from streams.stack.process import is_alive


def processes_of(state_dir: Path) -> list[int]:
    """Pids of the processes whose command line names ``state_dir`` (the stack's brokers)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and str(state_dir).encode() in command:
            pids.append(int(proc.name))
    return pids


def test_a_three_node_cluster_keeps_accepting_writes_when_a_leader_is_killed(
    tmp_path: Path, driftline_cli: Callable[..., Any]
) -> None:
    driftline = driftline_cli
    state_dir = tmp_path / "stack"
    env = {**os.environ, "DRIFTLINE_STACK_DIR": str(state_dir)}
    up = driftline("stack", "up", "--brokers", "3", env=env)
    assert up.returncode == 0, up.stderr
    settings = dict(
        line.removeprefix("export ").split("=", 1) for line in up.stdout.strip().splitlines()
    )
    bootstrap = settings["KAFKA_BOOTSTRAP_SERVERS"]
    kafka = {"bootstrap_servers": bootstrap}
    pids: list[int] = []
    try:
        status = driftline("stack", "status", env=env)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        nodes = {name: report[name] for name in ("kafka-1", "kafka-2", "kafka-3")}
        assert "kafka" not in report
        assert all(node["alive"] and node["answers"] for node in nodes.values()), report
        assert [node["address"] for node in nodes.values()] == bootstrap.split(",")
        pids = [int(node["pid"]) for node in report.values()]

        # A running cluster is not turned into one broker behind its users' backs.
        shrink = driftline("stack", "up", "--brokers", "1", env=env)
        assert shrink.returncode == 2
        assert len(shrink.stderr.strip().splitlines()) == 1, shrink.stderr
        assert "already runs 3 Kafka brokers, not 1" in shrink.stderr

        topic = f"cluster-{uuid.uuid4().hex[:8]}"
        admin = KafkaAdminClient(**kafka)
        try:
            # -1: the broker's default replication factor, as a topic a worker creates gets it.
            admin.create_topics([NewTopic(topic, 1, -1)], wait_for_metadata=True)
            resource = ConfigResource(ConfigResourceType.TOPIC, topic)
            configs = admin.describe_configs([resource], config_filter="all")["topic"][topic]
        finally:
            admin.close()
        assert configs["min.insync.replicas"]["value"] == "2"
        assert configs["unclean.leader.election.enable"]["value"] == "false"
        leader = partition_leader(kafka, topic, 0)
        assert in_sync_replicas(kafka, topic, 0) == [1, 2, 3]
        assert group_coordinator(kafka, f"group-{topic}") in (1, 2, 3)

        kill = driftline("stack", "node", "kill", str(leader), env=env)
        assert kill.returncode == 0, kill.stderr
        survivors = sorted({1, 2, 3} - {leader})

        def new_leader() -> int | None:
            # The controller fences the node once its heartbeats stop (broker.session.timeout.ms),
            # then drops it from the ISR and elects a new leader from what remains.
            now = partition_leader(kafka, topic, 0)
            in_sync = in_sync_replicas(kafka, topic, 0)
            return now if in_sync == survivors and now in survivors else None

        wait_for(new_leader, timeout=40, what="a new leader from the ISR")
        assert not is_alive(int(nodes[f"kafka-{leader}"]["pid"]))

        # Two in sync of three is min.insync.replicas: a write that all of them acknowledge
        # still succeeds.
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        try:
            written = producer.send(topic, b"written with a node down").get(timeout=30)
        finally:
            producer.close()
        assert written.offset >= 0

        start = driftline("stack", "node", "start", str(leader), env=env)
        assert start.returncode == 0, start.stderr
        wait_for(
            lambda: in_sync_replicas(kafka, topic, 0) == [1, 2, 3],
            timeout=40,
            what="the restarted node back in the ISR",
        )
        pids.append(LocalStack(state_dir).pid_of(f"kafka-{leader}"))

        # The KRaft quorum leader, stopped by its role: another voter takes over.
        controller = active_controller(kafka)
        stop = driftline("stack", "node", "stop", "--controller", env=env)
        assert stop.returncode == 0, stop.stderr
        assert f"kafka node {controller} stopped" in stop.stderr
        wait_for(
            lambda: active_controller(kafka) != controller,
            timeout=40,
            what="another active controller",
        )
    finally:
        down = driftline("stack", "down", env=env)
    assert down.returncode == 0, down.stderr
    # No "forcibly" check here: with the controller stopped above, two voters are left, and the
    # last of them to shut down has no quorum to finish its controlled shutdown, so `down` may
    # have to SIGKILL it after its timeout (it says so). What matters is that nothing is left.
    assert not any(is_alive(pid) for pid in pids)
    assert processes_of(state_dir) == []
    assert driftline("stack", "status", env=env).returncode == 1
