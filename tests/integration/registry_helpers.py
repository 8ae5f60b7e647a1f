"""Helpers for tests of the registry client and the scoring worker against a real trainer."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer
from pipeline import wait_for

from streams.registry.client import RegistryClient
from streams.registry.records import INFORMATIONAL_KINDS, ArtifactRef, ModelVersion, RecordKind
from streams.sdk import replay
from streams.sdk.producer import EventProducer
from streams.topics import Topics

SEA_EVENTS = 40_000
"""Enough for the SEA story: v1 after the warm-up, v2 after the concept switch."""


def client_for(env: dict, **overrides: Any) -> RegistryClient:
    """A registry client of the deployment the processes started with ``env`` use."""
    settings = {
        "topic": Topics.from_prefix(env["DRIFTLINE_TOPIC_PREFIX"]).registry,
        "redis_url": env["REDIS_URL"],
        "signing_key": env["DRIFTLINE_SIGNING_KEY"],
        "redis_prefix": env["DRIFTLINE_REDIS_PREFIX"],
        **overrides,
    }
    return RegistryClient(env["KAFKA_BOOTSTRAP_SERVERS"], **settings)


def serving_changes(records: list[ModelVersion]) -> list[ModelVersion]:
    """The records that change what serves: without drift, action and alert records."""
    return [record for record in records if record.kind not in INFORMATIONAL_KINDS]


def wait_for_records(
    client: RegistryClient, model: str, count: int, timeout: float = 45.0
) -> list[ModelVersion]:
    """The model's records that change what serves, once there are at least ``count``."""
    return wait_for(
        lambda: len(changes := serving_changes(client.history(model))) >= count and changes,
        timeout=timeout,
        what=f"{count} registry records of {model}",
        every=0.5,
    )


def start_sea_training(spawn: Callable, *, events: int = SEA_EVENTS) -> Any:
    """Start a trainer worker and feed it the SEA story (v1, v2 within ~15 s).

    Fewer ``events`` tell less of it: 2,000 give v1 alone (the warm-up is 1,000 events).
    """
    worker = spawn("worker", "--config", "examples/sea.toml", name="trainer")
    spawn("produce", "--synthetic", "sea", "--events", str(events), "--quiet")
    return worker


def train_sea(
    env: dict, spawn: Callable, *, versions: int = 2, events: int = SEA_EVENTS
) -> RegistryClient:
    """A client of a registry where a trainer published ``versions`` versions of sea, then stopped.

    The trainer is stopped so that no promotion of its own lands in the middle of a test.
    """
    client = client_for(env)
    worker = start_sea_training(spawn, events=events)
    try:
        wait_for_records(client, "sea", versions)
    finally:
        worker.terminate()
        worker.wait(30)
    return client


def publish_hand_made_version(
    env: dict, serving: ModelVersion, *, version: int, artifact: ArtifactRef, reason: str
) -> ModelVersion:
    """Publish, as a trainer would (signed with the deployment's key), ``version`` of
    ``serving``'s model naming ``artifact``.

    Waits for the broker's acknowledgement; returns the record.
    """
    record = ModelVersion(
        model=serving.model,
        version=version,
        kind=RecordKind.CHALLENGER,
        candidate=serving.candidate,
        previous_version=serving.version,
        reason=reason,
        evidence={},
        lineage=serving.lineage,
        artifact=artifact,
    ).signed(env["DRIFTLINE_SIGNING_KEY"].encode())
    publish_records(env, record)
    return record


def publish_records(env: dict, *records: ModelVersion) -> None:
    """Publish ``records`` as they are (signed or not) to the registry topic, in order, and wait
    for the broker's acknowledgement."""
    topic = Topics.from_prefix(env["DRIFTLINE_TOPIC_PREFIX"]).registry
    producer = KafkaProducer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    try:
        for record in records:
            producer.send(topic, key=record.model.encode(), value=record.to_json()).get(timeout=30)
    finally:
        producer.close()


class CreatesFile:
    """Unpickling this creates a file: proof, when the file is absent, that nothing unpickled it.

    The pickle names only ``builtins.open``, so any process can load it, this class unknown.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return (open, (self.path, "w"))


def unlabeled_sea_events(first_id: int = 0, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Unlabeled SEA events with ids ``u-<n>`` from ``first_id`` on (labels are ignored)."""
    events = replay.from_drift("sea", model="sea", events=10**6, drift_at=10**6, seed=seed)
    for number, event in zip(itertools.count(first_id), events, strict=False):
        yield {**event, "event_id": f"u-{number}"}


def kept_by_a_trainer(joined: list[dict[str, Any]]) -> list[str]:
    """The event ids a trainer learns from the joined records, in log order: it drops a record
    whose join number is not above the last it kept from that scorer partition."""
    last: dict[str, int] = {}
    kept = []
    for record in joined:
        source, number = record["join"]["source"], record["join"]["seq"]
        if number > last.get(source, 0):
            last[source] = number
            kept.append(record["event_id"])
    return kept


class TopicReader:
    """Every JSON record of a topic, from its beginning, read as it arrives."""

    def __init__(self, env: dict, topic: str) -> None:
        self.records: list[dict[str, Any]] = []
        self._consumer = KafkaConsumer(
            topic,
            bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )

    def read(self, timeout: float = 0.5) -> list[dict[str, Any]]:
        """Read what arrived (waiting up to ``timeout``); returns every record so far."""
        batches = self._consumer.poll(timeout_ms=int(timeout * 1000))
        for partition in sorted(batches, key=lambda tp: tp.partition):
            self.records.extend(orjson.loads(message.value) for message in batches[partition])
        return self.records

    def wait_until(
        self, condition: Callable[[list[dict[str, Any]]], bool], *, timeout: float, what: str
    ) -> list[dict[str, Any]]:
        return wait_for(lambda: condition(self.read()) and self.records, timeout=timeout, what=what)

    def close(self) -> None:
        self._consumer.close()


class Scoring:
    """Unlabeled events in, predictions read back, for one deployment (see ``driftline score``)."""

    def __init__(self, env: dict) -> None:
        topics = Topics.from_prefix(env["DRIFTLINE_TOPIC_PREFIX"])
        self.producer = EventProducer(
            env["KAFKA_BOOTSTRAP_SERVERS"], unlabeled_topic=topics.unlabeled
        )
        self.predictions = TopicReader(env, topics.predictions)
        self.sent: list[str] = []
        self._events: Iterator[dict[str, Any]] = unlabeled_sea_events()

    def send(self, count: int) -> None:
        for event in itertools.islice(self._events, count):
            self.producer.send_unlabeled(event)
            self.sent.append(event["event_id"])
        self.producer.flush()

    def until_served_by(self, version: int, *, timeout: float = 30.0) -> None:
        """Send small batches until a prediction made after this call comes from ``version``."""
        already = len(self.predictions.read(0))

        def served() -> bool:
            self.send(20)
            return any(p["version"] == version for p in self.predictions.read()[already:])

        wait_for(served, timeout=timeout, what=f"a prediction of v{version}", every=0.1)

    def all_scored(self, *, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every prediction, once one exists for each sent event (plus a moment for extras)."""
        self.predictions.wait_until(
            lambda records: len(records) >= len(self.sent),
            timeout=timeout,
            what=f"predictions of {len(self.sent)} events",
        )
        return self.predictions.read(1.0)

    def close(self) -> None:
        self.producer.close()
        self.predictions.close()
