"""Topic settings against real brokers: what the cluster refuses is one line naming the setting,
the topics are created with their min ISR and without unclean elections, and a worker does not
start on topics that would misroute records (see :mod:`streams.admin`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions
from pipeline import wait_for
from registry_helpers import publish_records

from streams.admin import TopicError, ensure_topics, key_partition
from streams.registry.records import ArtifactRef, ModelVersion
from streams.topics import Topics

REPO = Path(__file__).resolve().parents[2]
#: The topics that must not lose acknowledged records to an unclean leader election.
IRREPLACEABLE = ("labeled", "outcomes", "registry")


def _admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap)


def _configs(bootstrap: str, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each topic's min ISR and unclean election setting, with where its value comes from."""
    admin = _admin(bootstrap)
    try:
        keys = {"min.insync.replicas": None, "unclean.leader.election.enable": None}
        resources = [ConfigResource(ConfigResourceType.TOPIC, name, configs=keys) for name in names]
        described = admin.describe_configs(resources, config_filter="all")["topic"]
    finally:
        admin.close()
    return {
        name: {key: (value["value"], value["config_source"]) for key, value in configs.items()}
        for name, configs in described.items()
    }


def _replicas(bootstrap: str, names: Iterable[str]) -> dict[str, set[int]]:
    """The replica counts of each topic's partitions."""
    admin = _admin(bootstrap)
    try:
        described = admin.describe_topics(list(names))
    finally:
        admin.close()
    return {t["name"]: {len(p["replica_nodes"]) for p in t["partitions"]} for t in described}


def _serving_brokers(bootstrap: str) -> int:
    admin = _admin(bootstrap)
    try:
        return sum(not b.get("is_fenced") for b in admin.describe_cluster()["brokers"])
    finally:
        admin.close()


def _assert_created_as_configured(bootstrap: str, topics: Topics, *, replicas: int, insync: int):
    names = dataclasses.astuple(topics)
    assert _replicas(bootstrap, names) == {name: {replicas} for name in names}
    configs = _configs(bootstrap, names)
    for name in names:
        assert configs[name]["min.insync.replicas"] == (str(insync), "DYNAMIC_TOPIC_CONFIG"), name
    for name in (getattr(topics, field) for field in IRREPLACEABLE):
        assert configs[name]["unclean.leader.election.enable"] == ("false", "DYNAMIC_TOPIC_CONFIG")


def _refusal(result: Any, command: str) -> str:
    """The one line a refused worker command printed (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    prefix = f"driftline {command}: "
    assert line.startswith(prefix), line
    return line[len(prefix) :]


def test_a_replication_factor_the_cluster_refuses_is_one_line(
    driftline_env, driftline_cli, kafka_bootstrap
):
    too_many = _serving_brokers(kafka_bootstrap) + 2  # 3 on the tests' one broker
    variable = "DRIFTLINE__topics__registry__replication_factor"
    env = {**driftline_env, variable: str(too_many)}
    result = driftline_cli("worker", "--config", "examples/sea.toml", env=env, cwd=REPO)
    registry = Topics.from_prefix(env["DRIFTLINE_TOPIC_PREFIX"]).registry
    assert _refusal(result, "worker").startswith(
        f"topics.registry.replication_factor={too_many}: the cluster refused {registry}: "
        "InvalidReplicationFactorError: "
    )


def test_outcomes_with_other_partitions_than_the_unlabeled_events_stop_a_scorer(
    driftline_env, driftline_cli, kafka_bootstrap
):
    topics = Topics.from_prefix(driftline_env["DRIFTLINE_TOPIC_PREFIX"])
    admin = _admin(kafka_bootstrap)
    try:  # as an operator might have made it by hand
        admin.create_topics({topics.outcomes: {"num_partitions": 2}})
    finally:
        admin.close()
    result = driftline_cli("score", "--config", "examples/sea.toml", env=driftline_env, cwd=REPO)
    line = _refusal(result, "score")
    assert line.startswith(
        f"topic {topics.unlabeled} has 4 partitions and {topics.outcomes} 2: the scorer joins"
    )
    assert f"kafka-topics --alter --topic {topics.outcomes} --partitions 4" in line


def test_a_labeled_topic_grown_since_a_version_was_learned_stops_a_trainer(
    driftline_env, driftline_cli, kafka_bootstrap
):
    topics = Topics.from_prefix(driftline_env["DRIFTLINE_TOPIC_PREFIX"])
    kafka = {"bootstrap_servers": kafka_bootstrap}
    key = driftline_env["DRIFTLINE_SIGNING_KEY"].encode()
    ensure_topics(topics, kafka, partitions=4)
    learned_on = key_partition("sea", 4)
    assert key_partition("sea", 8) != learned_on, "the test needs sea to move with 8 partitions"
    source = f"{topics.labeled}[{learned_on}]"
    version = ModelVersion(
        model="sea",
        version=1,
        kind="initial",
        candidate={"name": "steady", "params": {}},
        previous_version=None,
        reason="first champion",
        evidence={},
        lineage={"format": 1, "source": source, "first_offset": 0, "last_offset": 999},
        artifact=ArtifactRef(key="k", sha256="0" * 64, size=1, signature="s"),
    ).signed(key)
    publish_records(driftline_env, version)
    assert ensure_topics(topics, kafka, partitions=4, signing_key=key).warnings == []

    admin = _admin(kafka_bootstrap)
    try:
        admin.create_partitions({topics.labeled: NewPartitions(total_count=8)})
    finally:
        admin.close()
    result = driftline_cli("worker", "--config", "examples/sea.toml", env=driftline_env, cwd=REPO)
    line = _refusal(result, "worker")
    assert line.startswith(f"topic {topics.labeled} has 8 partitions, other than when")
    assert (
        f"sea was learned from {source}, its events now go to [{key_partition('sea', 8)}]" in line
    )
    # Another deployment's trainer, without sea, starts: only configured models count.
    with pytest.raises(TopicError):
        ensure_topics(topics, kafka, partitions=4, signing_key=key)
    ensure_topics(topics, kafka, partitions=4, signing_key=key, models={"fraud"})


def test_created_topics_carry_their_min_isr_and_refuse_unclean_elections(kafka_bootstrap, unique):
    topics = Topics.from_prefix(unique("dl") + ".")
    checked = ensure_topics(topics, {"bootstrap_servers": kafka_bootstrap}, partitions=1)
    assert checked.warnings == []
    _assert_created_as_configured(kafka_bootstrap, topics, replicas=1, insync=1)


def test_an_existing_topic_whose_min_isr_exceeds_its_replicas_is_refused(kafka_bootstrap, unique):
    topics = Topics.from_prefix(unique("dl") + ".")
    admin = _admin(kafka_bootstrap)
    try:
        admin.create_topics({topics.registry: {"configs": {"min.insync.replicas": "2"}}})
    finally:
        admin.close()
    with pytest.raises(TopicError) as caught:
        ensure_topics(topics, {"bootstrap_servers": kafka_bootstrap}, partitions=1)
    assert str(caught.value).startswith(
        f"topic {topics.registry} has min.insync.replicas=2 but 1 replicas: every acknowledged "
        "write to it fails; lower it with kafka-configs --alter --entity-type topics "
        f"--entity-name {topics.registry} --add-config min.insync.replicas=1"
    )


def test_on_three_brokers_topics_replicate_by_default_and_faust_makes_none(
    kafka_cluster, unique, spawn
):
    bootstrap = kafka_cluster.kafka_bootstrap
    kafka = {"bootstrap_servers": bootstrap}
    # The defaults count the brokers that serve: a node just started may not be unfenced yet.
    wait_for(lambda: _serving_brokers(bootstrap) == 3, timeout=60, what="three brokers serving")
    older, lonely = (Topics.from_prefix(unique(stem) + ".") for stem in ("older", "lonely"))
    admin = _admin(bootstrap)
    try:  # as an older driftline created them: no min ISR of their own
        admin.create_topics(
            {
                older.registry: {"num_partitions": 1, "replication_factor": 2},
                lonely.registry: {"num_partitions": 1, "replication_factor": 1},
            }
        )
    finally:
        admin.close()
    # Fewer replicas than configured, but writes go through: the worker runs on.
    (warning,) = ensure_topics(older, kafka, partitions=2).warnings
    assert warning.startswith(
        f"topic {older.registry} has 2 replicas, below topics.registry.replication_factor=3"
    )
    # One replica where the broker's default min ISR is 2: no acknowledged write would succeed.
    with pytest.raises(TopicError, match=r"min.insync.replicas=2 \(the broker's default\) but 1"):
        ensure_topics(lonely, kafka, partitions=2)

    group = unique("trainer")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": kafka_cluster.redis_url,
        "DRIFTLINE_SIGNING_KEY": "test-signing-key",
        "DRIFTLINE_TOPIC_PREFIX": unique("dl") + ".",
        "DRIFTLINE_REDIS_PREFIX": unique("dl") + ":",
        "DRIFTLINE__worker__group": group,
    }
    topics = Topics.from_prefix(env["DRIFTLINE_TOPIC_PREFIX"])
    worker = spawn("worker", "--config", "examples/sea.toml", "--no-metrics", env=env)
    wait_for(
        lambda: "ready: group" in Path(worker.log_path).read_text(),
        timeout=90,
        what="the trainer on the 3-node cluster",
    )
    _assert_created_as_configured(bootstrap, topics, replicas=3, insync=2)
    admin = _admin(bootstrap)
    try:
        faust_topics = [name for name in admin.list_topics() if name.startswith(group)]
    finally:
        admin.close()
    # Its leader topic disabled, faust creates no topic of its own (streams.workers.app).
    assert faust_topics == []
    assert "below topics." not in Path(worker.log_path).read_text()
