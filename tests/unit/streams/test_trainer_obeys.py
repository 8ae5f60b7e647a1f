"""The trainer worker obeys the registry's serving state: rollouts, rollbacks, their artifacts.

Reuses the in-memory fakes of ``test_ledger`` (checkpoints, broker, artifact store); the
artifacts the outbox stores are loaded back, checked, through the runtime's ``load_artifact``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import redis
from test_ledger import (
    KEY,
    LABELED,
    SPEC,
    TOPICS,
    ArtifactStore,
    Broker,
    Consumer,
    MemoryCheckpoints,
    run,
    sea_events,
)

from streams.config import DriftlineConfig, WorkerSettings
from streams.registry.artifacts import Artifact
from streams.registry.records import ModelVersion, RecordKind
from streams.workers.outbox import Outbox
from streams.workers.trainer import KAFKA_ERRORS, TrainingRuntime
from trainers.errors import ArtifactIntegrityError
from trainers.spec import ModelSpec
from trainers.trainer import ModelTrainer

CANARY = {
    **SPEC,
    "policy": {"warmup": 50, "every": 50, "min_samples": 50, "cooldown": 0, "alpha": 0.2},
    "rollout": {"strategy": "canary", "fraction": 0.3},
}


class Deployment:
    """A trainer runtime over the fakes, whose artifacts load from the fake store."""

    def __init__(self, table: dict[str, Any] = CANARY) -> None:
        self.broker, self.artifacts = Broker(), ArtifactStore()
        self.loads: list[int] = []
        config = DriftlineConfig(
            models={"sea": ModelSpec.from_dict("sea", table)},
            worker=WorkerSettings(checkpoint_every=10_000, checkpoint_interval=1e9),
            topics=TOPICS,
        )

        async def read_registry() -> list[ModelVersion]:
            return self.broker.records()

        async def load_artifact(record: ModelVersion) -> Any:
            self.loads.append(record.version)
            blob = self.artifacts.stored.get(record.artifact.sha256)
            if blob is None:
                raise ArtifactIntegrityError(f"missing: no artifact under {record.artifact.key}")
            return Artifact(blob, record.artifact).load(
                model=record.model, version=record.version, key=KEY
            )

        self.runtime = TrainingRuntime(
            config,
            checkpoints=MemoryCheckpoints(),  # type: ignore[arg-type]
            outbox=Outbox(
                send=self.broker.send,
                store_artifact=self.artifacts.store,
                registry_topic=TOPICS.registry,
                signing_key=KEY,
                redis_prefix="test:",
                store_errors=(redis.RedisError,),
                delivery_errors=KAFKA_ERRORS,
            ),
            consumer=Consumer(),
            read_registry=read_registry,
            read_dead_letters=self.broker.read_dead_letters,
            load_artifact=load_artifact,
        )

    async def until_trial(self) -> ModelVersion:
        """Learn SEA events until the trainer publishes a canary; return its record."""
        await self.runtime.obey([], caught_up=True)
        for event in sea_events(3000):
            await self.runtime.handle(event)
            trials = [r for r in self.broker.records() if r.kind is RecordKind.CANARY]
            if trials:
                return trials[0]
        raise AssertionError("no canary was issued")

    async def publish(self, record: ModelVersion) -> None:
        """Publish ``record`` as the guardrail or an operator would, and let the runtime read it."""
        await self.broker.send(TOPICS.registry, b"sea", record.signed(KEY).to_json())
        await self.runtime.obey(self.broker.records(), caught_up=True)

    def trainer(self) -> ModelTrainer:
        return self.runtime.ledger.partitions[LABELED].models["sea"]

    def record(self, version: int) -> ModelVersion:
        return next(r for r in self.broker.records() if r.version == version)


def ending(record: ModelVersion, kind: RecordKind, previous: int) -> ModelVersion:
    """The record that makes ``record``'s version stable again (a rollout or a rollback)."""
    return dataclasses.replace(
        record,
        kind=kind,
        previous_version=previous,
        reason=f"{kind} by the guardrail",
        evidence={"n_canary": 1000},
        rollout=None,
        operator=None,
        signature=None,
    )


def same_predictions(a: Any, b: Any) -> bool:
    features = [{"x0": float(i), "x1": 9.0 - i, "x2": 3.0} for i in range(10)]
    return all(a.predict_proba_one(x) == b.predict_proba_one(x) for x in features)


def test_a_trial_record_carries_its_rollout_and_changes_no_champion() -> None:
    deployment = Deployment()
    trial = run(deployment.until_trial())
    assert (trial.kind, trial.rollout, trial.version, trial.previous_version) == (
        "canary",
        {"fraction": 0.3},
        2,
        1,
    )
    run(deployment.runtime.obey(deployment.broker.records(), caught_up=True))
    trainer = deployment.trainer()
    assert trainer.champion_version == 1 and trainer.trial is not None
    assert deployment.runtime.states["sea"].trial == trial
    assert deployment.loads == []


def test_a_rollout_record_is_adopted_with_its_artifact() -> None:
    deployment = Deployment()

    async def scenario() -> None:
        trial = await deployment.until_trial()
        await deployment.publish(ending(trial, RecordKind.ROLLOUT, previous=1))

    run(scenario())
    trainer = deployment.trainer()
    assert (trainer.champion_version, trainer.champion, trainer.trial) == (2, "lr", None)
    assert trainer.champion_reason == "rollout: rollout by the guardrail"
    assert deployment.loads == [2]
    assert trainer.served_copy is not None
    assert "sea" in deployment.runtime.ledger.partitions[LABELED].dirty


def test_a_rollback_of_the_trial_makes_the_stable_artifact_champion_once() -> None:
    deployment = Deployment()

    async def scenario() -> tuple[Any, Any]:
        trial = await deployment.until_trial()
        v1 = deployment.record(1)
        live_before = deployment.trainer().candidate("nb")
        await deployment.publish(ending(v1, RecordKind.ROLLBACK, previous=trial.version))
        return live_before, deployment.trainer().candidate("nb")

    live_before, live_after = run(scenario())
    trainer = deployment.trainer()
    assert (trainer.champion_version, trainer.champion, trainer.trial) == (1, "nb", None)
    assert deployment.loads == [1]
    # The champion is v1 as served (its artifact), not the live "nb" that kept learning.
    assert live_after is not live_before
    assert same_predictions(live_after, trainer.served_copy)
    assert not same_predictions(live_after, live_before)
    # Obeyed once: later polls change nothing.
    run(deployment.runtime.obey([], caught_up=True))
    assert trainer.candidate("nb") is live_after and deployment.loads == [1]


def test_a_trial_the_follower_has_not_read_yet_is_not_taken_for_ended() -> None:
    deployment = Deployment()

    async def scenario() -> None:
        trial = await deployment.until_trial()
        v1 = deployment.record(1)
        # The follower lags: it has read an operator's rollback to v1 but not the canary yet.
        rollback = ending(v1, RecordKind.ROLLBACK, previous=1).signed(KEY)
        deployment.runtime.states.clear()
        deployment.runtime.seen.clear()
        await deployment.runtime.obey([v1, rollback], caught_up=True)
        assert deployment.trainer().trial is not None
        # Then it reads the canary: the trial runs, still nothing to adopt.
        await deployment.runtime.obey([trial], caught_up=True)
        assert deployment.trainer().trial is not None and deployment.loads == []

    run(scenario())


def test_a_version_whose_artifact_cannot_be_loaded_is_adopted_without_it(caplog: Any) -> None:
    deployment = Deployment()

    async def scenario() -> None:
        trial = await deployment.until_trial()
        deployment.artifacts.stored.clear()
        await deployment.publish(ending(trial, RecordKind.ROLLOUT, previous=1))

    with caplog.at_level(logging.ERROR, logger="driftline.trainer"):
        run(scenario())
    trainer = deployment.trainer()
    assert (trainer.champion_version, trainer.champion, trainer.trial) == (2, "lr", None)
    # A rollout of its own trial: the trainer still has the trial's copy to test.
    assert trainer.served_copy is not None
    assert "cannot load the artifact of v2" in caplog.text


def test_a_direct_model_adopts_an_operators_rollback_with_its_artifact() -> None:
    deployment = Deployment({**CANARY, "rollout": {"strategy": "direct"}})

    async def scenario() -> None:
        await deployment.runtime.obey([], caught_up=True)
        for event in sea_events(3000):
            await deployment.runtime.handle(event)
            if len(deployment.broker.records()) >= 2:
                break
        await deployment.runtime.obey(deployment.broker.records(), caught_up=True)
        assert deployment.loads == []  # its own records are not adopted
        rollback = dataclasses.replace(
            ending(deployment.record(1), RecordKind.ROLLBACK, previous=2), operator="alice"
        )
        await deployment.publish(rollback)

    run(scenario())
    trainer = deployment.trainer()
    assert (trainer.champion_version, trainer.champion, trainer.latest_version) == (1, "nb", 2)
    assert trainer.champion_reason == "rollback by alice: rollback by the guardrail"
    assert deployment.loads == [1]
    assert same_predictions(trainer.candidate("nb"), trainer.served_copy)


def test_a_trial_replaced_by_an_operators_trial_is_over_for_the_trainer() -> None:
    deployment = Deployment()

    async def scenario() -> None:
        await deployment.until_trial()
        v1 = deployment.record(1)
        operators = dataclasses.replace(
            v1, kind=RecordKind.CANARY, rollout={"fraction": 0.5}, operator="bob", signature=None
        )
        await deployment.publish(operators)

    run(scenario())
    trainer = deployment.trainer()
    assert (trainer.champion_version, trainer.champion, trainer.trial) == (1, "nb", None)
    assert deployment.runtime.states["sea"].trial is not None
    assert deployment.loads == [1]
