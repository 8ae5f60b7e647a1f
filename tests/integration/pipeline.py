"""Helpers for tests that run trainer workers against the real broker and Redis."""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaProducer

from streams.admin import ensure_topics
from streams.config import DriftlineConfig, load_config
from streams.contract import encode_event
from streams.registry.records import NOTICE_KINDS, ModelVersion, read_registry
from streams.sdk import replay
from streams.sdk.producer import EventProducer
from streams.topics import Topics
from streams.workers.checkpoint import read_checkpoint
from trainers.trainer import ModelTrainer, Promotion

SEA_CONFIG = Path(__file__).parents[2] / "examples" / "sea.toml"


@dataclass
class Deployment:
    """One test's view of a driftline deployment: its topics, Redis namespace and group."""

    env: dict[str, str]
    config_path: Path = SEA_CONFIG

    @property
    def topics(self) -> Topics:
        return Topics.from_prefix(self.env["DRIFTLINE_TOPIC_PREFIX"])

    @property
    def kafka(self) -> dict[str, str]:
        return {"bootstrap_servers": self.env["KAFKA_BOOTSTRAP_SERVERS"]}

    def config(self) -> DriftlineConfig:
        return load_config(self.config_path, self.env)

    def raw_config(self) -> dict[str, Any]:
        return tomllib.loads(self.config_path.read_text())

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.env["REDIS_URL"])

    def send_raw(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Produce (key, value) records as they are, valid or not, to the labeled topic.

        The topics are created first, as a worker would create them: a topic the broker
        creates on the first write gets one partition.
        """
        ensure_topics(self.topics, self.kafka, partitions=self.config().worker.partitions)
        producer = KafkaProducer(acks="all", max_request_size=2**21, **self.kafka)
        for key, value in records:
            producer.send(self.topics.labeled, key=key, value=value)
        producer.flush()
        producer.close()

    def send_batched(self, events: Iterable[dict[str, Any]]) -> None:
        """Produce labeled events through the producer SDK, in its batch records."""
        ensure_topics(self.topics, self.kafka, partitions=self.config().worker.partitions)
        with EventProducer(topic=self.topics.labeled, **self.kafka) as producer:
            for event in events:
                producer.send(event)
            producer.flush()

    def send_unlabeled(self, events: Iterable[dict[str, Any]]) -> None:
        """Produce events to be scored, through the producer SDK."""
        with EventProducer(
            topic=self.topics.labeled, unlabeled_topic=self.topics.unlabeled, **self.kafka
        ) as producer:
            for event in events:
                producer.send_unlabeled({k: v for k, v in event.items() if k != "label"})
            producer.flush()

    def trainers(self) -> dict[str, ModelTrainer]:
        """The models as the workers' last checkpoints hold them."""
        client = self.redis()
        found: dict[str, ModelTrainer] = {}
        config = self.config()
        for partition in range(config.worker.partitions):
            _, snapshots = read_checkpoint(
                client,
                prefix=self.env["DRIFTLINE_REDIS_PREFIX"],
                group=self.env["DRIFTLINE__worker__group"],
                topic=self.topics.labeled,
                partition=partition,
            )
            found.update(
                {
                    m: ModelTrainer.restore(blob, config.models[m])[0]
                    for m, blob in snapshots.items()
                }
            )
        return found

    def registry(self, *, notices: bool = False) -> list[ModelVersion]:
        """The registry's records: the versions, and with `notices` the drift and action
        notices too (a model with a ``drift`` table publishes them between its versions)."""
        key = self.env["DRIFTLINE_SIGNING_KEY"].encode()
        records = read_registry(self.topics.registry, self.kafka, key=key)
        return [r for r in records if notices or r.kind not in NOTICE_KINDS]

    def wait_until_learned(self, model: str, events: int, *, timeout: float = 120) -> ModelTrainer:
        """Wait until the checkpoint of ``model`` holds ``events`` events."""
        return wait_for(
            lambda: (t := self.trainers().get(model)) is not None and t.events >= events and t,
            timeout=timeout,
            what=f"{model} to learn {events} events",
        )


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def sea_events(
    n: int = 40_000, drift_at: int = 20_000, seed: int = 42, model: str = "sea"
) -> list[dict[str, Any]]:
    return list(replay.from_drift("sea", model=model, events=n, drift_at=drift_at, seed=seed))


def encoded(events: Iterable[dict[str, Any]]) -> Iterable[tuple[bytes, bytes]]:
    return ((event["model"].encode(), encode_event(event)) for event in events)


def train_in_process(
    config: DriftlineConfig, events: Iterable[dict[str, Any]], topic: str, model: str = "sea"
) -> tuple[ModelTrainer, list[Promotion]]:
    """The uninterrupted reference: the same events through one trainer, offsets 0, 1, 2, ...

    The source is named as the worker names partition 0 of `topic`.
    """
    trainer = ModelTrainer(config.models[model])
    promotions = []
    for offset, event in enumerate(events):
        promotion = trainer.learn(
            event["features"], event["label"], source=f"{topic}[0]", position=offset
        )
        if promotion:
            promotions.append(promotion)
    return trainer, promotions
