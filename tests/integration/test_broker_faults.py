"""Broker faults on a real 3-node KRaft cluster (replication factor 3, min ISR 2), tested as
Kafka tests itself: while a trainer and a scorer run and records flow, one node is SIGKILLed at a
seeded point (the leader of the model's labeled partition, the leader of the registry partition
while a promotion is published, the trainers' group coordinator, the active controller), then
restarted or lost for good; and two of three nodes at once.

After each fault the end state is exactly that of an undisturbed run of the same events
(:mod:`broker_faults`): the same registry records with the same artifact SHA-256s and lineage,
every event learned, predicted and joined once, every bad record dead-lettered once.

``DRIFTLINE_FAULT_SEED=N`` repeats a run's stream and kill points.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_faults import (
    DRIFT_AT,
    LABELED,
    Sender,
    check_end_state,
    copy_topic,
    plan_stream,
    prepare_topics,
    registry_summary,
)
from conftest import _deployment_env, _driftline_processes
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2
from pipeline import Deployment, wait_for

from streams.stack.cluster import (
    active_controller,
    group_coordinator,
    in_sync_replicas,
    partition_leader,
)
from streams.stack.process import StackError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PROBE_TOPIC = "driftline-test-every-node-in-sync"
STALLED = "Kafka has acknowledged none of this worker's"
RESUMED = "Kafka acknowledges this worker's records again"
TARGETS = ("labeled-leader", "registry-leader", "trainers-coordinator", "active-controller")


@pytest.fixture
def cluster(kafka_cluster: Any) -> Iterator[Any]:
    """The session's 3-node cluster, every node running again after the test."""
    stack = kafka_cluster.node_control()
    # A node restarted after the last test answers before the controller unfences it and before
    # it is back in sync: until then the cluster cannot place three replicas of a new topic.
    kafka = {"bootstrap_servers": kafka_cluster.kafka_bootstrap}
    wait_for(
        lambda: _every_node_in_sync(kafka, sorted(stack.node_ids())),
        timeout=120,
        what="every node in sync",
        every=0.5,
    )
    yield kafka_cluster
    for node in stack.node_ids():
        stack.start_node(node)  # a no-op for a running node


def _every_node_in_sync(kafka: dict[str, str], nodes: list[int]) -> bool:
    """Whether a probe topic with a replica on every node can be created and is fully in sync."""
    admin = KafkaAdminClient(**kafka)
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(PROBE_TOPIC, 1, len(nodes))])
        return in_sync_replicas(kafka, PROBE_TOPIC, 0) == nodes
    except (KafkaError, StackError):  # a node not unfenced yet, or not answering
        return False
    finally:
        admin.close()


def _seed() -> int:
    seed = int(os.environ.get("DRIFTLINE_FAULT_SEED", random.randrange(10_000)))
    print(f"fault seed: {seed} (DRIFTLINE_FAULT_SEED={seed} repeats this run)")
    return seed


def _labeled_partition(deployment: Deployment) -> int:
    """The labeled partition of model ``sea`` (Kafka's default partitioner: murmur2 of the key)."""
    return (murmur2(b"sea") & 0x7FFFFFFF) % deployment.config().worker.partitions


def _victim(target: str, deployment: Deployment) -> int:
    kafka = deployment.kafka
    if target == "labeled-leader":
        return partition_leader(kafka, deployment.topics.labeled, _labeled_partition(deployment))
    if target == "registry-leader":
        return partition_leader(kafka, deployment.topics.registry, 0)
    if target == "trainers-coordinator":
        return group_coordinator(kafka, deployment.env["DRIFTLINE__worker__group"])
    return active_controller(kafka)


class Run:
    """One deployment on the cluster: its workers, its stream and its sender."""

    def __init__(self, cluster: Any, tmp_path: Path, unique: Callable[[str], str], seed: int):
        self.cluster = cluster
        self.unique = unique
        self.tmp_path = tmp_path
        self.env = _deployment_env(cluster.kafka_bootstrap, cluster.redis_url, unique)
        self.deployment = Deployment(self.env)
        self.stream = plan_stream(seed)
        prepare_topics(self.deployment)

    def start(self, processes: Callable[..., Any]) -> Sender:
        self.trainer = processes("worker", "--config", "examples/sea.toml", name="trainer")
        self.scorer = processes("score", "--config", "examples/sea.toml", name="scorer")
        sender = Sender(self.deployment, self.stream, lambda: bool(self.deployment.registry()))
        sender.start()
        return sender

    def finish(self, sender: Sender) -> None:
        sender.join(timeout=420)
        assert not sender.is_alive(), "the producer delivered its records"
        assert sender.error is None, f"the producer failed: {sender.error!r}"
        check_end_state(self.deployment, self.stream)
        assert self.trainer.poll() is None and self.scorer.poll() is None, "workers survive"

    def undisturbed_registry(self) -> list[tuple[Any, ...]]:
        """The registry of a trainer, run without any fault, on a copy of the labeled log."""
        env = _deployment_env(self.cluster.kafka_bootstrap, self.cluster.redis_url, self.unique)
        reference = Deployment(env)
        prepare_topics(reference)
        copy_topic(reference.kafka, self.deployment.topics.labeled, reference.topics.labeled)
        with _driftline_processes(env, self.tmp_path) as processes:
            processes("worker", "--config", "examples/sea.toml", name="reference")
            total = self.stream.labeled_events + len(self.stream.to_score)
            reference.wait_until_learned("sea", total, timeout=240)
            return registry_summary(reference)


@pytest.mark.parametrize("returns", [True, False], ids=["restarted", "lost-for-good"])
@pytest.mark.parametrize("target", TARGETS)
def test_a_killed_node_changes_nothing(cluster, tmp_path, unique, target, returns):
    seed = _seed()
    rng = random.Random(seed)
    run = Run(cluster, tmp_path, unique, seed)
    # The registry's leader dies just after the concept switch: the promotion it brings is
    # published while its partition elects a new leader.
    at = DRIFT_AT + 100 if target == "registry-leader" else rng.randrange(2_000, LABELED - 3_000)
    with _driftline_processes(run.env, tmp_path) as processes:
        sender = run.start(processes)
        run.deployment.wait_until_learned("sea", at, timeout=180)
        victim = _victim(target, run.deployment)
        print(f"SIGKILL node {victim} ({target}) after {at} events")
        cluster.stack.stop_node(victim, kill=True)
        if returns:
            time.sleep(rng.uniform(2, 6))
            cluster.stack.start_node(victim)
        run.finish(sender)
        disturbed = registry_summary(run.deployment)
    assert len(disturbed) >= 2, "v1 and the version after the concept switch"
    assert disturbed == run.undisturbed_registry()


def test_two_nodes_down_stop_progress_and_it_resumes_when_one_returns(cluster, tmp_path, unique):
    seed = _seed()
    run = Run(cluster, tmp_path, unique, seed)
    with _driftline_processes(run.env, tmp_path) as processes:
        sender = run.start(processes)
        run.deployment.wait_until_learned("sea", 3_000, timeout=180)
        first, second, _ = sorted(
            cluster.stack.node_ids(), key=lambda _: random.Random(seed).random()
        )
        cluster.stack.stop_node(first, kill=True)
        cluster.stack.stop_node(second, kill=True)
        time.sleep(20)  # no quorum, no ISR of two: nothing can be written
        stalled = run.deployment.trainers()["sea"].events
        time.sleep(5)
        assert run.deployment.trainers()["sea"].events == stalled < LABELED, "no progress"
        assert run.trainer.poll() is None and run.scorer.poll() is None, "workers survive"
        cluster.stack.start_node(first)
        run.finish(sender)
        disturbed = registry_summary(run.deployment)
    said = {
        name: Path(process.log_path).read_text(errors="replace")
        for name, process in (("trainer", run.trainer), ("scorer", run.scorer))
    }
    stalls = {name: log.count(STALLED) for name, log in said.items()}
    resumes = {name: log.count(RESUMED) for name, log in said.items()}
    print(f"outage lines: {stalls}, resumed lines: {resumes}")
    assert stalls["trainer"] == 1, "the trainer, whose records wait, says so once"
    assert max(stalls.values()) == 1 and resumes == stalls, "once each, and once it resumed"
    assert disturbed == run.undisturbed_registry()
