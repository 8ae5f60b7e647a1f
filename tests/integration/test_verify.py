"""`driftline registry verify` and `dataset` against versions a real worker published."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, TopicPartition
from pipeline import Deployment, encoded, sea_events, wait_for
from registry_helpers import client_for, publish_records

from streams.admin import ensure_topics
from streams.contract import decode_labeled, record_coordinate
from streams.registry.records import NEW_VERSION_KINDS, ArtifactRef, ModelVersion, RecordKind
from streams.topics import Topics
from trainers.serialization import canonical_dumps, sha256_hex
from trainers.trainer import ModelTrainer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CONFIG = """
# A model whose configured first champion is poor ("slow" barely learns): the good candidate
# beats it soon after the warm-up (v2), and again after a rollback to the slow one.
[models.sea]
task = "classification"
window = 500
champion = "slow"

[models.sea.policy]
metric = "accuracy"
warmup = 500
every = 250
min_samples = 500
margin = 0.01
alpha = 0.05
cooldown = 1000

[[models.sea.candidates]]
name = "slow"
river = "StandardScaler | LogisticRegression"
params = { LogisticRegression = { optimizer = { SGD = 0.0001 } } }

[[models.sea.candidates]]
name = "good"
river = "StandardScaler | LogisticRegression"
params = { LogisticRegression = { optimizer = { SGD = 0.05 } } }
"""


def test_versions_published_through_sigkills_and_a_rollback_verify(
    driftline_env, spawn, driftline_cli, tmp_path
):
    config = tmp_path / "sea.toml"
    config.write_text(CONFIG)
    deployment = Deployment(driftline_env, config_path=config)
    events = sea_events(20_000, drift_at=10_000)
    deployment.send_raw(encoded(events[:6_000]))
    worker = spawn("worker", "--config", str(config), name="trainer")
    for kills, point in enumerate((1_200, 4_000), start=1):
        deployment.wait_until_learned("sea", point)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker = spawn("worker", "--config", str(config), name=f"trainer-{kills}")
    deployment.wait_until_learned("sea", 6_000)
    wait_for(lambda: len(deployment.registry()) >= 2, timeout=30, what="two versions")
    client_for(driftline_env).rollback("sea", to=1, reason="v1 is what downstream validated")
    # The running trainer obeys at its follower's next poll; a trainer that claims the partition
    # after the rollback obeys on the claim, and checkpoints that only with its next events.
    wait_for(
        lambda: re.search(r"sea: rollback to v1 by \S+ obeyed", Path(worker.log_path).read_text()),
        timeout=60,
        what="the trainer to obey the rollback",
    )
    deployment.send_raw(encoded(events[6_000:]))
    deployment.wait_until_learned("sea", 12_000)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    spawn("worker", "--config", str(config), name="trainer-last")
    deployment.wait_until_learned("sea", 20_000)

    records = deployment.registry()
    rollback = next(r for r in records if r.kind is RecordKind.ROLLBACK)
    issued = [r for r in records if r.kind in NEW_VERSION_KINDS and r.operator is None]
    after_rollback = [r for r in issued if r.version > rollback.previous_version]
    assert after_rollback, "no version was issued after the rollback: nothing obeyed to replay"
    assert after_rollback[0].lineage["adoptions"][-1]["registry_offset"] == rollback.offset
    for record in issued:
        verified = driftline_cli(
            "registry", "verify", "sea", str(record.version), env=driftline_env
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert f"sea v{record.version}: match, sha256 {record.artifact.sha256}" in verified.stdout

    # Another configuration diverges where its first version does: another learning rate of
    # "good" changes its metric on the warm-up window, which v1's evidence holds.
    changed = tmp_path / "sea-changed.toml"
    changed.write_text(CONFIG.replace("SGD = 0.05", "SGD = 0.02"))
    mismatch = driftline_cli(
        "registry", "verify", "sea", "v3", "--config", str(changed), env=driftline_env
    )
    assert mismatch.returncode == 1, mismatch.stdout + mismatch.stderr
    assert "sea v3: MISMATCH, diverges at v1, after 500 events learned: evidence." in (
        mismatch.stdout
    )

    # The dataset of a version, learned by a fresh trainer in this process, gives its bytes.
    target = issued[1]
    dataset = tmp_path / "sea-v2.jsonl"
    exported = driftline_cli(
        "registry", "dataset", "sea", str(target.version), "-o", str(dataset), env=driftline_env
    )
    assert exported.returncode == 0, exported.stdout + exported.stderr
    trainer = ModelTrainer(deployment.config().models["sea"])
    promotions = [
        promotion
        for position, line in enumerate(dataset.read_bytes().splitlines())
        if (event := decode_labeled(line))
        and (
            promotion := trainer.learn(
                event.features, event.label, source="file", position=position
            )
        )
    ]
    assert promotions[-1].version == target.version
    assert sha256_hex(canonical_dumps(promotions[-1].estimator)) == target.artifact.sha256

    # A range retention deleted is named, not silently skipped.
    source = issued[0].lineage["source"]
    partition = int(source.rsplit("[", 1)[1].rstrip("]"))
    first = record_coordinate(issued[0].lineage["first_offset"])[0]
    admin = KafkaAdminClient(bootstrap_servers=driftline_env["KAFKA_BOOTSTRAP_SERVERS"])
    try:
        admin.delete_records({TopicPartition(deployment.topics.labeled, partition): first + 100})
    finally:
        admin.close()
    deleted = driftline_cli("registry", "verify", "sea", "1", env=driftline_env)
    assert deleted.returncode == 2, deleted.stdout + deleted.stderr
    assert f"{source} offsets {first}..{first + 99} are deleted" in deleted.stderr


def test_a_record_without_lineage_is_refused_by_name(driftline_env, driftline_cli):
    old = ModelVersion(
        model="legacy",
        version=1,
        kind=RecordKind.INITIAL,
        candidate={"name": "nb", "params": {}},
        previous_version=None,
        reason="published by driftline before lineage",
        evidence={},
        lineage={"source": "t[0]", "first_offset": 0, "last_offset": 9, "events": 10},
        artifact=ArtifactRef(key="k", sha256="0" * 64, size=1, signature="s"),
    ).signed(driftline_env["DRIFTLINE_SIGNING_KEY"].encode())
    publish_records(driftline_env, old)
    refused = driftline_cli("registry", "verify", "legacy", "1", env=driftline_env)
    assert refused.returncode == 2
    assert "legacy v1 was published before driftline recorded complete lineage" in refused.stderr


def test_training_data_is_kept_forever_unless_configured_and_the_worker_says_so(
    driftline_env, spawn, unique
):
    kafka = {"bootstrap_servers": driftline_env["KAFKA_BOOTSTRAP_SERVERS"]}
    kept = Topics.from_prefix(unique("kept") + ".")
    assert ensure_topics(kept, kafka, partitions=1).warnings == []

    env = {**driftline_env, "DRIFTLINE__worker__event_retention": "7d"}
    worker = spawn("worker", "--config", "examples/sea.toml", env=env, name="trainer")
    labeled = Topics.from_prefix(driftline_env["DRIFTLINE_TOPIC_PREFIX"]).labeled
    warning = (
        f"topic {labeled} keeps its records for 7 days (retention.ms=604800000): a model version "
        "learned from records older than that can no longer be verified or exported"
    )
    wait_for(
        lambda: warning in Path(worker.log_path).read_text(),
        timeout=60,
        what="the worker's warning about the labeled topic's retention",
    )
