"""Every producer driftline builds is idempotent with acks=all: the workers' (faust's aiokafka
producer) and each kafka-python one (the SDK, the registry client, the demo's canaries). Their
configurations are read without a broker."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

import streams.registry.client as registry_client
import streams.sdk.producer as sdk_producer
from streams.cli.demo.trials import registry_publisher
from streams.config import DriftlineConfig
from streams.registry.client import publish_record
from streams.sdk.producer import EventProducer
from streams.settings import PRODUCER_DURABILITY
from streams.topics import Topics
from streams.workers.app import WorkerApp

DURABLE = {"acks": "all", "enable_idempotence": True}
KAFKA = {"bootstrap_servers": "broker.invalid:9092"}


class Delivered:
    def get(self, timeout: float | None = None) -> str:
        return "metadata"


class RecordingProducer:
    """kafka-python's KafkaProducer as far as driftline's callers go: records its settings."""

    built: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **config: Any) -> None:
        RecordingProducer.built.append(config)

    def send(self, topic: str, key: bytes, value: bytes) -> Delivered:
        return Delivered()

    def close(self, timeout: float | None = None) -> None:
        pass


class Record:
    """The two things publish_record asks of a ModelVersion."""

    model = "sea"

    def to_json(self) -> bytes:
        return b"{}"


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    RecordingProducer.built = []
    monkeypatch.setattr(sdk_producer, "KafkaProducer", RecordingProducer)
    monkeypatch.setattr(registry_client, "KafkaProducer", RecordingProducer)
    return RecordingProducer.built


def test_the_durability_is_idempotence_with_acks_all() -> None:
    assert dict(PRODUCER_DURABILITY) == DURABLE


def test_the_sdk_producer_is_built_durable(recording: list[dict[str, Any]]) -> None:
    EventProducer("broker.invalid:9092")._producer()
    (config,) = recording
    assert config.items() >= DURABLE.items()


def test_registry_records_are_published_by_a_durable_producer(
    recording: list[dict[str, Any]],
) -> None:
    publish_record(KAFKA, "registry", Record(), timeout=1)  # type: ignore[arg-type]
    registry_publisher(KAFKA, "registry")(Record())  # type: ignore[arg-type]
    assert len(recording) == 2
    assert all(config.items() >= {**DURABLE, **KAFKA}.items() for config in recording)


def test_the_workers_aiokafka_producer_is_idempotent_with_acks_all() -> None:
    config = DriftlineConfig(models={}, topics=Topics.from_prefix("durable."))
    worker = WorkerApp("durable", config, dict(KAFKA), outputs=())

    async def build() -> Any:
        producer = worker.app.producer._new_producer()  # type: ignore[attr-defined]
        await producer.client.close()
        return producer

    producer = asyncio.run(build())
    # aiokafka keeps no copy of its settings: idempotence is its transaction manager (with no
    # transactional id), and acks are the sender's (-1 is "all").
    assert producer._txn_manager is not None and producer._txn_manager.transactional_id is None
    assert producer._sender._acks == -1
