"""The scoring worker's logic without Kafka: the registry follower and the per-event runtime."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from faust.types import TP

from streams.config import load_config
from streams.contract import decode_dead_letter
from streams.registry.records import ArtifactRef, ModelVersion, manual_record
from streams.workers.scorer import RegistryFollower, ScoringRuntime, Serving, ServingTable
from trainers.errors import ArtifactIntegrityError

SEA_CONFIG = Path(__file__).parents[3] / "examples" / "sea.toml"
SOURCE = TP("driftline.events.unlabeled", 0)


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
class FakeBroker:
    """Collects sends; deliveries succeed unless ``refuse`` is set."""

    refuse: bool = False
    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value))
        delivery = asyncio.get_running_loop().create_future()
        if self.refuse:
            delivery.set_exception(RuntimeError("broker refused"))
        else:
            delivery.set_result(None)
        return delivery


def event(offset: int, model: str = "sea", **features: Any) -> FakeEvent:
    value = {"event_id": f"e-{offset}", "model": model, "ts": 1.0, "features": features}
    return FakeEvent(FakeMessage(orjson.dumps(value), offset))


@pytest.fixture
def config():
    return load_config(SEA_CONFIG, {})


def runtime(config, table: ServingTable, broker: FakeBroker, max_wait: float = 0.2):
    table.ready.set()
    return ScoringRuntime(config, table=table, send=broker.send, max_wait=max_wait)


async def handle(scoring: ScoringRuntime, *events: FakeEvent) -> None:
    for each in events:
        await scoring.handle(each)
    await asyncio.sleep(0)  # let the delivery callbacks run


def test_an_event_is_scored_by_the_serving_version_and_acked_once_delivered(config):
    table, broker = ServingTable(), FakeBroker()
    table.put(Serving(version(2), ConstantModel(2)))
    first = event(0, x0=1.0)
    asyncio.run(handle(runtime(config, table, broker), first))
    [(topic, key, value)] = broker.sent
    assert (topic, key) == (config.topics.predictions, b"sea")
    assert orjson.loads(value) == {
        "event_id": "e-0",
        "model": "sea",
        "version": 2,
        "prediction": 2,
        "probabilities": {"true": 0.25, "false": 0.75},
    }
    assert first.acked


def test_an_undelivered_prediction_leaves_its_event_unacked(config):
    table, broker = ServingTable(), FakeBroker(refuse=True)
    table.put(Serving(version(2), ConstantModel(2)))
    lost = event(0)
    asyncio.run(handle(runtime(config, table, broker), lost))
    assert not lost.acked


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (FakeEvent(FakeMessage(b"{not json", 0)), "not_json"),
        (event(0, model="other"), "unknown_model"),
        (event(0, boom=1), "model_error"),
    ],
)
def test_events_that_cannot_be_scored_go_to_the_dead_letter_topic(config, bad, code):
    table, broker = ServingTable(), FakeBroker()
    table.put(Serving(version(2), ConstantModel(2)))
    asyncio.run(handle(runtime(config, table, broker), bad))
    [(topic, _, value)] = broker.sent
    assert topic == config.topics.dlq
    assert decode_dead_letter(value)["reason_code"] == code
    assert bad.acked


def test_a_model_without_a_version_is_waited_for_once_then_dead_lettered(config):
    table, broker = ServingTable(), FakeBroker()
    scoring = runtime(config, table, broker, max_wait=0.2)
    assert asyncio.run(_timed(handle(scoring, event(0)))) >= 0.2
    # The wait has run out: the next event goes to the dead letters at once.
    assert asyncio.run(_timed(handle(scoring, event(1)))) < 0.1
    codes = [decode_dead_letter(value)["reason_code"] for _, _, value in broker.sent]
    assert codes == ["no_version", "no_version"]


def test_an_event_waiting_for_a_first_version_is_scored_when_it_arrives(config):
    table, broker = ServingTable(), FakeBroker()
    scoring = runtime(config, table, broker, max_wait=5.0)

    async def publish_soon() -> None:
        await asyncio.sleep(0.1)
        table.put(Serving(version(1), ConstantModel(1)))

    async def scenario() -> None:
        await asyncio.gather(handle(scoring, event(0)), publish_soon())

    asyncio.run(scenario())
    [(topic, _, value)] = broker.sent
    assert topic == config.topics.predictions
    assert orjson.loads(value)["version"] == 1


async def _timed(work) -> float:
    start = asyncio.get_running_loop().time()
    await work
    return asyncio.get_running_loop().time() - start
