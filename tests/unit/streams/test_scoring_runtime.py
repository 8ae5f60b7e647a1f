"""The scoring worker's logic without Kafka: the registry follower and the per-event runtime."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiokafka.errors
import orjson
import pytest
from faust.types import TP

from streams.config import load_config
from streams.contract import decode_dead_letter
from streams.registry.records import ArtifactRef, ModelVersion, manual_record
from streams.workers.join import Served, _prediction_value
from streams.workers.scorer import (
    RegistryFollower,
    ScoringRuntime,
    Serving,
    ServingTable,
    decision_of,
)
from trainers.errors import ArtifactIntegrityError
from trainers.guardrail import GuardDecision

SEA_CONFIG = Path(__file__).parents[3] / "examples" / "sea.toml"
SOURCE = TP("driftline.events.unlabeled", 0)
PREDICTIONS, DLQ = "driftline.predictions", "driftline.events.dlq"


def version(number: int, *, model: str = "sea") -> ModelVersion:
    digest = f"{number:064x}"
    return ModelVersion(
        model=model,
        version=number,
        kind="challenger",
        candidate={"name": "c"},
        previous_version=None,
        reason="",
        evidence={},
        lineage={},
        artifact=ArtifactRef(key=f"p:artifact:{digest}", sha256=digest, size=1, signature="s"),
    )


class ConstantModel:
    """Predicts its version number; raises on a feature named 'boom'."""

    def __init__(self, number: int) -> None:
        self.number = number

    def predict_with_proba(self, x: dict) -> tuple[Any, dict | None]:
        if "boom" in x:
            raise RuntimeError("boom")
        return self.number, {True: 0.25, False: 0.75}


class FakeClient:
    """Loads a ConstantModel, or refuses the versions listed as tampered."""

    def __init__(self, tampered: set[int] = frozenset()) -> None:
        self.tampered = tampered
        self.loaded: list[int] = []

    def load(self, record: ModelVersion) -> ConstantModel:
        self.loaded.append(record.version)
        if record.version in self.tampered:
            raise ArtifactIntegrityError("digest mismatch")
        return ConstantModel(record.version)


def follower(client: FakeClient, table: ServingTable) -> RegistryFollower:
    return RegistryFollower(client, table, {"sea"})


def test_a_tampered_new_version_leaves_the_previous_one_serving():
    table, client = ServingTable(), FakeClient(tampered={3})
    follower(client, table).apply([version(1), version(2)])
    assert table.get("sea").record.version == 2
    follower(client, table).apply([version(3)])
    assert table.get("sea").record.version == 2


def test_a_batch_serves_its_last_loadable_record_and_loads_nothing_before_it():
    table, client = ServingTable(), FakeClient(tampered={3})
    follower(client, table).apply([version(1), version(2), version(3)])
    assert table.get("sea").record.version == 2
    assert client.loaded == [3, 2]


def test_a_record_of_the_serving_artifact_swaps_the_record_without_reloading():
    table, client = ServingTable(), FakeClient()
    follower(client, table).apply([version(1)])
    same = manual_record(version(1), kind="manual", previous_version=1, reason="r", operator="o")
    follower(client, table).apply([same])
    assert table.get("sea").record is same
    assert client.loaded == [1]


def test_models_the_configuration_does_not_declare_are_not_loaded():
    table, client = ServingTable(), FakeClient()
    follower(client, table).apply([version(1, model="other")])
    assert table.get("other") is None and client.loaded == []


@dataclass
class FakeMessage:
    value: bytes | None
    offset: int
    key: bytes = b"sea"
    tp: TP = SOURCE


@dataclass
class FakeEvent:
    message: FakeMessage
    acked: bool = False

    def ack(self) -> None:
        self.acked = True


@dataclass
class FakeJoiner:
    """Commits every message at once, and publishes what the real joiner would publish."""

    fenced: bool = False
    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    cursors: dict[str, int] = field(default_factory=dict)

    async def owned(self, partition: int) -> FakeJoiner:
        return self

    def skips(self, state: Any, topic: str, offset: int) -> bool:
        return offset <= self.cursors.get(topic, -1)

    async def served(
        self,
        state: Any,
        partition: int,
        offset: int,
        served: list[Served],
        dead_letters: list[tuple[bytes, bytes]],
    ) -> bool:
        self.sent += [(DLQ, key, value) for key, value in dead_letters]
        for each in served:
            for prediction in each.predictions:
                value = _prediction_value(each.event, prediction)
                self.sent.append((PREDICTIONS, each.event.model.encode(), value))
        return self._commit(SOURCE.topic, offset)

    async def dead_letter(self, state, partition, topic, offset, dead_letter) -> bool:
        self.sent.append((DLQ, *dead_letter))
        return self._commit(topic, offset)

    def _commit(self, topic: str, offset: int) -> bool:
        if not self.fenced:
            self.cursors[topic] = offset
        return not self.fenced


def event(offset: int, model: str = "sea", event_id: str | None = None, **features: Any):
    value = {"event_id": event_id or f"e-{offset}", "model": model, "ts": 1.0, "features": features}
    return FakeEvent(FakeMessage(orjson.dumps(value), offset, key=model.encode()))


@pytest.fixture
def config():
    return load_config(SEA_CONFIG, {})


def runtime(config, table: ServingTable, joiner: FakeJoiner, max_wait: float = 0.2):
    table.ready.set()

    async def publish_record(record: ModelVersion) -> None:
        joiner.sent.append(("registry", record.model.encode(), record.to_json()))

    return ScoringRuntime(
        config, table=table, joiner=joiner, publish_record=publish_record, max_wait=max_wait
    )


async def handle(scoring: ScoringRuntime, *events: FakeEvent) -> None:
    for each in events:
        await scoring.handle(each)


def test_an_event_is_scored_by_the_serving_version_and_acked_once_committed(config):
    table, joiner = ServingTable(), FakeJoiner()
    table.put(Serving(version(2), ConstantModel(2)))
    first = event(0, x0=1.0)
    asyncio.run(handle(runtime(config, table, joiner), first))
    [(topic, key, value)] = joiner.sent
    assert (topic, key) == (PREDICTIONS, b"sea")
    assert orjson.loads(value) == {
        "event_id": "e-0",
        "model": "sea",
        "version": 2,
        "arm": "stable",
        "prediction": 2,
        "probabilities": {"true": 0.25, "false": 0.75},
    }
    assert first.acked


def test_an_event_whose_commit_is_fenced_stays_unacked_and_one_already_handled_is_skipped(config):
    table, joiner = ServingTable(), FakeJoiner(fenced=True)
    table.put(Serving(version(2), ConstantModel(2)))
    lost = event(0)
    asyncio.run(handle(runtime(config, table, joiner), lost))
    assert not lost.acked
    joiner.fenced, joiner.cursors = False, {SOURCE.topic: 5}
    replayed = event(5)
    asyncio.run(handle(runtime(config, table, joiner), replayed))
    assert replayed.acked and len(joiner.sent) == 1


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (FakeEvent(FakeMessage(b"{not json", 0)), "not_json"),
        (event(0, model="other"), "unknown_model"),
        (FakeEvent(FakeMessage(event(0).message.value, 0, key=b"other")), "key_mismatch"),
        (event(0, boom=1), "model_error"),
    ],
)
def test_events_that_cannot_be_scored_go_to_the_dead_letter_topic(config, bad, code):
    table, joiner = ServingTable(), FakeJoiner()
    table.put(Serving(version(2), ConstantModel(2)))
    asyncio.run(handle(runtime(config, table, joiner), bad))
    [(topic, _, value)] = joiner.sent
    assert topic == DLQ
    assert decode_dead_letter(value)["reason_code"] == code
    assert bad.acked


def test_a_model_without_a_version_is_waited_for_once_then_dead_lettered(config):
    table, joiner = ServingTable(), FakeJoiner()
    scoring = runtime(config, table, joiner, max_wait=1.0)
    assert asyncio.run(_timed(handle(scoring, event(0)))) >= 1.0
    # The wait has run out: the next event goes to the dead letters without waiting again (the
    # bound is half the wait, not a speed: a loaded CI machine took 0.1 s to handle one event).
    assert asyncio.run(_timed(handle(scoring, event(1)))) < 0.5
    codes = [decode_dead_letter(value)["reason_code"] for _, _, value in joiner.sent]
    assert codes == ["no_version", "no_version"]


def test_an_unverifiable_model_is_dead_lettered_with_the_reason(config):
    table, joiner = ServingTable(), FakeJoiner()
    table.refused["sea"] = "cannot verify sea v5: not signed with this key"
    asyncio.run(handle(runtime(config, table, joiner, max_wait=0.05), event(0)))
    [letter] = [decode_dead_letter(value) for _, _, value in joiner.sent]
    assert (letter["reason_code"], letter["reason"]) == (
        "unverified_version",
        "cannot verify sea v5: not signed with this key",
    )


def test_an_event_waiting_for_a_first_version_is_scored_when_it_arrives(config):
    table, joiner = ServingTable(), FakeJoiner()
    scoring = runtime(config, table, joiner, max_wait=5.0)

    async def publish_soon() -> None:
        await asyncio.sleep(0.1)
        table.put(Serving(version(1), ConstantModel(1)))

    async def scenario() -> None:
        await asyncio.gather(handle(scoring, event(0)), publish_soon())

    asyncio.run(scenario())
    [(topic, _, value)] = joiner.sent
    assert topic == PREDICTIONS
    assert orjson.loads(value)["version"] == 1


def test_a_canary_serves_its_fraction_of_events_and_a_shadow_scores_beside_stable(config):
    table, joiner = ServingTable(), FakeJoiner()
    table.put(Serving(version(1), ConstantModel(1)))
    canary = dataclasses.replace(version(2), kind="canary", rollout={"fraction": 0.3})
    table.put_trial("sea", Serving(canary, ConstantModel(2)))
    scoring = runtime(config, table, joiner)
    asyncio.run(handle(scoring, *(event(i) for i in range(2_000))))
    arms = Counter(orjson.loads(value)["arm"] for _, _, value in joiner.sent)
    assert arms["canary"] / 2_000 == pytest.approx(0.3, abs=0.03)
    again = FakeJoiner()
    asyncio.run(handle(runtime(config, table, again), *(event(i) for i in range(2_000))))
    assert again.sent == joiner.sent, "an event always gets the same arm"

    shadow = dataclasses.replace(version(2), kind="shadow", rollout={"fraction": 1.0})
    table.put_trial("sea", Serving(shadow, ConstantModel(2)))
    joiner = FakeJoiner()
    asyncio.run(handle(runtime(config, table, joiner), event(0)))
    arms = [orjson.loads(value)["arm"] for _, _, value in joiner.sent]
    assert arms == ["stable", "shadow"]


def test_guardrail_decisions_become_records_once_while_they_apply(config):
    table, joiner = ServingTable(), FakeJoiner()
    table.put(Serving(version(1), ConstantModel(1)))
    canary = dataclasses.replace(version(2), kind="canary", rollout={"fraction": 0.3})
    table.put_trial("sea", Serving(canary, ConstantModel(2)))
    scoring = runtime(config, table, joiner)
    rollback = GuardDecision("rollback", "worse", {"trial_version": 2, "stable_version": 1})
    stale = GuardDecision("rollout", "fine", {"trial_version": 7, "stable_version": 1})
    for decision in (rollback, rollback, stale):
        asyncio.run(scoring.decided("sea", decision))
    [record] = [ModelVersion.from_json(value) for _, _, value in joiner.sent]
    assert (record.kind, record.version, record.previous_version) == ("rollback", 1, 2)
    assert (record.operator, record.evidence["trial_version"]) == ("guardrail", 2)


async def _timed(work) -> float:
    start = asyncio.get_running_loop().time()
    await work
    return asyncio.get_running_loop().time() - start


def test_a_guardrail_record_the_broker_does_not_take_is_tried_again_never_raised(config, caplog):
    """A Kafka error after the join's commit must not crash the agent nor lose the record."""
    table, joiner = ServingTable(), FakeJoiner()
    table.put(Serving(version(1), ConstantModel(1)))
    attempts: list[ModelVersion] = []

    async def publish_record(record: ModelVersion) -> None:
        attempts.append(record)
        if len(attempts) <= 3:
            raise aiokafka.errors.KafkaTimeoutError()

    table.ready.set()
    scoring = ScoringRuntime(
        config, table=table, joiner=joiner, publish_record=publish_record, retry_first=0.001
    )
    alert = GuardDecision("alert", "degraded", {"stable_version": 1, "n": 40})
    with caplog.at_level("INFO", logger="driftline.scorer"):
        asyncio.run(scoring.decided("sea", alert))
    assert len(attempts) == 4 and len({a.to_json() for a in attempts}) == 1
    failures = [r for r in caplog.records if "failed, tried again" in r.getMessage()]
    assert len(failures) == 1, "logged once per outage"
    assert any("succeeded after an outage" in r.getMessage() for r in caplog.records)


def test_a_replayed_decision_the_registry_holds_is_not_published_again(config):
    """I10: the claim's replay decides again what the previous owner published before its
    crash; the follower has read the registry up to its end before any claim."""
    table, joiner = ServingTable(), FakeJoiner()
    follower(FakeClient(), table).apply([version(1)])
    alert = GuardDecision("alert", "degraded", {"stable_version": 1, "n": 40})
    asyncio.run(runtime(config, table, joiner).decided("sea", alert))
    [(_, _, published)] = joiner.sent
    read = ModelVersion.from_json(published)
    follower(FakeClient(), table).apply([version(1), read])  # a restart reads the registry
    assert table.decisions == {decision_of(read)}

    after_crash = FakeJoiner()
    asyncio.run(runtime(config, table, after_crash).decided("sea", alert))
    assert after_crash.sent == []
    later = GuardDecision("alert", "degraded", {"stable_version": 1, "n": 90})
    asyncio.run(runtime(config, table, after_crash).decided("sea", later))
    assert len(after_crash.sent) == 1, "a decision on other evidence is new"
