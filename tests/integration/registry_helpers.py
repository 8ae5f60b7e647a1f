"""Helpers for tests of the registry client and the scoring worker against a real trainer."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from kafka import KafkaConsumer
from pipeline import wait_for

from streams import replay
from streams.registry import ModelVersion
from streams.registry_client import RegistryClient
from streams.topics import Topics


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


def wait_for_records(
    client: RegistryClient, model: str, count: int, timeout: float = 45.0
) -> list[ModelVersion]:
    """The model's history once it holds at least ``count`` records."""
    return wait_for(
        lambda: (history := client.history(model)) and len(history) >= count and history,
        timeout=timeout,
        what=f"{count} registry records of {model}",
        every=0.5,
    )


def start_sea_training(spawn: Callable) -> Any:
    """Start a trainer worker and feed it the SEA story (v1, v2, v3 within ~15 s)."""
    worker = spawn("worker", "--config", "examples/sea.toml", name="trainer")
    spawn("produce", "--synthetic", "sea", "--events", "40000", "--drift-at", "20000", "--quiet")
    return worker


def train_sea(env: dict, spawn: Callable) -> RegistryClient:
    """A client of a registry where a trainer published sea v1, v2 and v3, then stopped.

    The trainer is stopped so that no promotion of its own lands in the middle of a test.
    """
    client = client_for(env)
    worker = start_sea_training(spawn)
    try:
        wait_for_records(client, "sea", 3)
    finally:
        worker.terminate()
        worker.wait(30)
    return client


def unlabeled_sea_events(first_id: int = 0, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Unlabeled SEA events with ids ``u-<n>`` from ``first_id`` on (labels are ignored)."""
    events = replay.from_drift("sea", model="sea", events=10**6, drift_at=10**6, seed=seed)
    for number, event in zip(itertools.count(first_id), events, strict=False):
        yield {**event, "event_id": f"u-{number}"}


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
