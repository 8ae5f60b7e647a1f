"""The partition ledger's guarantees against a real broker and Redis, with a real trainer worker.

Fences, foreign partitions, tampered checkpoints and edited configurations: each must leave the
models exactly as an uninterrupted in-process run would, or stop and say why.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.partitioner.default import murmur2
from pipeline import SEA_CONFIG, Deployment, encoded, sea_events, train_in_process, wait_for
from registry_helpers import TopicReader

from streams.workers.checkpoint import checkpoint_keys, checkpoint_namespace
from trainers.errors import CandidateChangedError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _log(worker) -> str:
    with open(worker.log_path, errors="replace") as log:
        return log.read()


def _checkpoint_keys(deployment: Deployment, partition: int) -> list[str]:
    env = deployment.env
    namespace = checkpoint_namespace(env["DRIFTLINE_REDIS_PREFIX"], env["DRIFTLINE__worker__group"])
    return checkpoint_keys(namespace, deployment.topics.labeled, partition)


def _partition_of(deployment: Deployment, model: str) -> int:
    """The partition Kafka's Java client and kafka-python put ``model``'s events on."""
    partitions = deployment.config().worker.partitions
    return (murmur2(model.encode()) & 0x7FFFFFFF) % partitions


def test_a_partition_lost_to_a_fence_is_given_up_and_learned_exactly_once(driftline_env, spawn):
    deployment = Deployment(driftline_env)
    events = sea_events(20_000, drift_at=10_000)
    worker = spawn("worker", "--config", "examples/sea.toml", "--log-level", "info", name="trainer")
    deployment.send_raw(encoded(events[:10_000]))
    deployment.wait_until_learned("sea", 10_000)

    # Another worker's claim, as a zombie owner would see it: the epoch moves under our feet.
    partition = next(
        p for p in range(4) if deployment.redis().exists(_checkpoint_keys(deployment, p)[1])
    )
    deployment.redis().incr(_checkpoint_keys(deployment, partition)[0])
    deployment.send_raw(encoded(events[10_000:]))

    trainer = deployment.wait_until_learned("sea", len(events), timeout=180)
    reference, promotions = train_in_process(deployment.config(), events, deployment.topics.labeled)
    assert trainer.learned == reference.learned
    log = _log(worker)
    assert "giving it up so the group reassigns it" in log
    assert log.count(f"claimed {deployment.topics.labeled}[{partition}]") >= 2
    versions = [v.version for v in deployment.registry()]
    assert versions == [p.version for p in promotions]


def test_foreign_partitions_and_wrong_keys_never_start_a_second_trainer(driftline_env, spawn):
    deployment = Deployment(driftline_env)
    events = sea_events(6_000, drift_at=3_000)
    worker = spawn("worker", "--config", "examples/sea.toml", name="trainer")
    deployment.send_raw(encoded(events[:3_000]))
    deployment.wait_until_learned("sea", 3_000)

    owner = _partition_of(deployment, "sea")
    foreign = (owner + 1) % deployment.config().worker.partitions
    # What kcat does with its default (CRC32) partitioner: the right key, another partition.
    producer = KafkaProducer(bootstrap_servers=driftline_env["KAFKA_BOOTSTRAP_SERVERS"])
    for key, value in encoded(events[:2_500]):
        producer.send(deployment.topics.labeled, key=key, value=value, partition=foreign)
    for _, value in encoded(events[:100]):
        producer.send(deployment.topics.labeled, key=None, value=value, partition=owner)
    producer.flush()
    producer.close()
    deployment.send_raw(encoded(events[3_000:]))

    trainer = deployment.wait_until_learned("sea", len(events), timeout=120)
    reference, promotions = train_in_process(deployment.config(), events, deployment.topics.labeled)
    assert trainer.learned == reference.learned
    assert "sea" not in _snapshots(deployment, foreign)
    letters = TopicReader(driftline_env, deployment.topics.dlq).wait_until(
        lambda records: len(records) >= 2_600, timeout=60, what="the dead letters"
    )
    reasons = [letter["reason_code"] for letter in letters]
    assert reasons.count("wrong_partition") == 2_500
    assert reasons.count("key_mismatch") == 100
    assert [v.version for v in deployment.registry()] == [p.version for p in promotions]
    assert worker.poll() is None


def test_a_tampered_checkpoint_stops_its_partition_until_an_operator_acts(driftline_env, spawn):
    deployment = Deployment(driftline_env)
    events = sea_events(6_000, drift_at=3_000)
    worker = spawn("worker", "--config", "examples/sea.toml", name="trainer")
    deployment.send_raw(encoded(events[:3_000]))
    deployment.wait_until_learned("sea", 3_000)
    worker.send_signal(signal.SIGTERM)
    worker.wait(60)

    partition = _partition_of(deployment, "sea")
    _, manifest_key, models_key = _checkpoint_keys(deployment, partition)
    client = deployment.redis()
    manifest = client.get(manifest_key)
    client.hset(models_key, "sea", b"cos\nsystem\n(S'touch /tmp/driftline-pwned'\ntR.")

    restarted = spawn("worker", "--config", "examples/sea.toml", name="trainer-restarted")
    deployment.send_raw(encoded(events[3_000:]))
    wait_for(lambda: "checkpoint is refused" in _log(restarted), timeout=60, what="the refusal")
    time.sleep(3)
    assert restarted.poll() is None, "the worker keeps running its other partitions"
    assert client.get(manifest_key) == manifest, "nothing may be saved over a refused checkpoint"
    assert not Path("/tmp/driftline-pwned").exists()


def test_the_configuration_owns_the_model_across_restarts(driftline_env, spawn, tmp_path):
    deployment = Deployment(driftline_env)
    events = sea_events(9_000, drift_at=4_500)
    worker = spawn("worker", "--config", "examples/sea.toml", name="trainer")
    deployment.send_raw(encoded(events[:3_000]))
    deployment.wait_until_learned("sea", 3_000)
    worker.send_signal(signal.SIGTERM)
    worker.wait(60)

    # A new window from the environment is taken, not ignored.
    env = {**driftline_env, "DRIFTLINE__models__sea__window": "500"}
    worker = spawn("worker", "--config", "examples/sea.toml", env=env, name="window")
    deployment.send_raw(encoded(events[3_000:6_000]))
    deployment.wait_until_learned("sea", 6_000)
    assert "window: 1000 -> 500" in _log(worker)
    worker.send_signal(signal.SIGTERM)
    worker.wait(60)

    # Changed parameters of a candidate stop its partition, until the operator resets it.
    edited = tmp_path / "sea.toml"
    edited.write_text(SEA_CONFIG.read_text().replace("C = 1.0", "C = 0.5"))
    refused = spawn("worker", "--config", str(edited), name="edited")
    deployment.send_raw(encoded(events[6_000:]))
    wait_for(lambda: "sea/agile" in _log(refused), timeout=60, what="the refusal")
    assert "--reset-candidate" in _log(refused)
    refused.send_signal(signal.SIGTERM)
    refused.wait(60)

    reset = spawn("worker", "--config", str(edited), "--reset-candidate", "sea/agile", name="reset")
    edited_deployment = Deployment(driftline_env, config_path=edited)
    trainer = wait_for(
        lambda: (t := _restored(edited_deployment)) and t.learned["steady"] == len(events) and t,
        timeout=120,
        what="the reset candidate to learn",
    )
    assert trainer.learned["steady"] == len(events)
    assert trainer.learned["agile"] == len(events) - 6_000
    assert reset.poll() is None


def _restored(deployment: Deployment):
    """The checkpoint's sea model under the deployment's configuration, or None until it fits."""
    try:
        return deployment.trainers().get("sea")
    except CandidateChangedError:  # the checkpoint still holds the candidate's old parameters
        return None


def _snapshots(deployment: Deployment, partition: int) -> set[str]:
    return {
        key.decode() for key in deployment.redis().hkeys(_checkpoint_keys(deployment, partition)[2])
    }
