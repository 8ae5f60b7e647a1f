"""Artifacts come back after Redis lost them: the trainer stores a version's artifact again when it
learns the version again, and a scorer looks a missing artifact up again with a backoff (fakes
for Kafka and Redis; tests/integration/test_artifacts_back.py runs the real ones)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import test_ledger
from test_drift_outbox import outbox
from test_ledger import Event, MemoryCheckpoints, Worker, fakes, run, sea_events
from test_scoring_runtime import ConstantModel, FakeClient, version

from streams.registry.artifacts import ArtifactMissing
from streams.registry.records import ModelVersion, RecordKind, manual_record
from streams.workers.scorer import RegistryFollower, ServingTable
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer, Promotion


def first_promotion() -> Promotion:
    trainer = ModelTrainer(ModelSpec.from_dict("sea", test_ledger.SPEC))
    stream = drift_stream("sea", n=50, drift_at=10**9, seed=7)
    (promotion,) = [
        p for i, (x, y) in enumerate(stream) if (p := trainer.learn(x, y, source="s", position=i))
    ]
    return promotion


def published_then_lost(broker, artifacts) -> tuple[Promotion, ModelVersion]:
    """A promotion published by one outbox, whose artifact Redis then lost."""
    promotion = first_promotion()
    run(outbox(broker, artifacts).promote(promotion))
    (record,) = broker.records()
    artifacts.stored.clear()
    return promotion, record


def test_a_trainer_learning_the_stream_again_stores_every_lost_artifact_again(caplog) -> None:
    checkpoints, broker, artifacts = fakes()
    events = sea_events(120)
    run(Worker(checkpoints, broker, artifacts).feed(events))
    published = broker.records()
    assert [record.version for record in published] == [1]
    # Redis lost everything: the artifacts and the checkpoints, so the stream is learned again.
    artifacts.stored.clear()
    with caplog.at_level(logging.INFO, logger="driftline.trainer"):
        run(Worker(MemoryCheckpoints(), broker, artifacts).feed([Event(e.message) for e in events]))
    assert broker.records() == published, "I5: nothing published again"
    assert set(artifacts.stored) == {record.artifact.sha256 for record in published}
    restored = [r.getMessage() for r in caplog.records if "missing from Redis" in r.getMessage()]
    assert len(restored) == 1, restored


def test_a_version_learned_again_whose_artifact_is_present_stores_nothing(caplog) -> None:
    _, broker, artifacts = fakes()
    promotion = first_promotion()
    run(outbox(broker, artifacts).promote(promotion))
    stored = dict(artifacts.stored)
    restarted = outbox(broker, artifacts)
    restarted.note_published(broker.records())
    with caplog.at_level(logging.INFO, logger="driftline.trainer"):
        run(restarted.promote(promotion))
    assert artifacts.stored == stored and len(broker.records()) == 1
    assert "sea v1 is already in the registry" in caplog.text
    assert "missing from Redis" not in caplog.text


def test_a_version_learned_again_with_another_sha256_is_one_diverged_error(caplog) -> None:
    _, broker, artifacts = fakes()
    promotion, record = published_then_lost(broker, artifacts)
    elsewhere = dataclasses.replace(record.artifact, sha256="0" * 64)
    restarted = outbox(broker, artifacts)
    restarted.note_published([dataclasses.replace(record, artifact=elsewhere)])
    with caplog.at_level(logging.INFO, logger="driftline.trainer"):
        run(restarted.promote(promotion))
    assert artifacts.stored == {} and len(broker.records()) == 1
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.startswith("diverged: sea v1 ")
    assert record.artifact.sha256 in error and "0" * 64 in error


def test_only_the_trainers_record_of_a_version_is_compared() -> None:
    _, broker, artifacts = fakes()
    promotion, record = published_then_lost(broker, artifacts)
    manual = manual_record(
        record, kind=RecordKind.MANUAL, previous_version=1, reason="r", operator="o"
    )
    elsewhere = dataclasses.replace(record.artifact, sha256="0" * 64)
    restarted = outbox(broker, artifacts)
    restarted.note_published([dataclasses.replace(manual, artifact=elsewhere), record])
    run(restarted.promote(promotion))
    assert set(artifacts.stored) == {record.artifact.sha256}


def test_a_lost_artifact_that_redis_cannot_take_is_logged_and_does_not_wait(caplog) -> None:
    _, broker, artifacts = fakes()
    promotion, record = published_then_lost(broker, artifacts)
    restarted = outbox(broker, artifacts)
    restarted.note_published([record])
    artifacts.down = True
    run(restarted.promote(promotion))
    assert restarted.waiting == 0 and artifacts.stored == {}
    assert "its artifact cannot be checked in Redis" in caplog.text


class MissingClient(FakeClient):
    """Loads a ConstantModel, or finds nothing for the versions listed as missing."""

    def __init__(self, missing: set[int]) -> None:
        super().__init__()
        self.missing = missing

    def load(self, record: ModelVersion) -> ConstantModel:
        if record.version in self.missing:
            self.loaded.append(record.version)
            raise ArtifactMissing(f"missing: no artifact under {record.artifact.key}")
        return super().load(record)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_missing_artifact_is_looked_up_with_a_backoff_logged_once_and_served_once_back(
    caplog,
) -> None:
    table, client, clock = ServingTable(), MissingClient({2}), Clock()
    follower = RegistryFollower(client, table, {"sea"}, retry=(1.0, 4.0), clock=clock)
    with caplog.at_level(logging.INFO, logger="driftline.scorer"):
        follower.apply([version(1), version(2)])
        assert table.get("sea").record.version == 1
        for clock.now in (0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0):
            follower.retry_missing()
        # Looked up at 1 s, then 2 s and 4 s later, then every 4 s (the longest wait).
        assert client.loaded == [2, 1, 2, 2, 2, 2]
        assert table.get("sea").record.version == 1
        client.missing.clear()  # restored
        clock.now = 14.0
        follower.retry_missing()
        assert table.get("sea").record.version == 1, "not before its wait is over"
        clock.now = 15.0
        follower.retry_missing()
    assert table.get("sea").record.version == 2
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if m.startswith("refusing sea v2 ")]) == 1
    assert "missing: no artifact under" in caplog.text
    assert "sea v2: its artifact is back in Redis" in messages
    assert not [m for m in messages if "keeps serving its previous version" in m]


@pytest.mark.parametrize("rolled_back", [True, False])
def test_a_missing_artifact_no_version_wants_any_more_is_forgotten(rolled_back: bool) -> None:
    table, client, clock = ServingTable(), MissingClient({2}), Clock()
    follower = RegistryFollower(client, table, {"sea"}, retry=(1.0, 4.0), clock=clock)
    follower.apply([version(1), version(2)])
    if rolled_back:
        back = manual_record(
            version(1), kind=RecordKind.ROLLBACK, previous_version=2, reason="r", operator="o"
        )
        follower.apply([back])
    for clock.now in (1.0, 3.0, 7.0):
        follower.retry_missing()
    assert client.loaded == ([2, 1] if rolled_back else [2, 1, 2, 2, 2])
