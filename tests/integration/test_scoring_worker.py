"""The scoring worker (``driftline score``) against a real broker, Redis and trainer."""

from __future__ import annotations

import itertools
import pickle
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaProducer
from pipeline import wait_for
from registry_helpers import (
    TopicReader,
    client_for,
    start_sea_training,
    train_sea,
    unlabeled_sea_events,
)

from streams import artifacts
from streams.producer import EventProducer
from streams.registry import ModelVersion
from streams.registry_client import RegistryClient
from streams.topics import Topics


class Scoring:
    """Unlabeled events in, predictions read back, for one test's deployment."""

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


@pytest.fixture
def scoring(driftline_env: dict) -> Iterator[Scoring]:
    scoring = Scoring(driftline_env)
    yield scoring
    scoring.close()


def served_versions(predictions: list[dict[str, Any]]) -> list[int]:
    """The versions in prediction order, each run of equal versions collapsed to one."""
    return [version for version, _ in itertools.groupby(p["version"] for p in predictions)]


def assert_each_event_scored_once(predictions: list[dict[str, Any]], sent: list[str]) -> None:
    counts = Counter(prediction["event_id"] for prediction in predictions)
    assert set(counts) == set(sent)
    assert counts.most_common(1)[0][1] == 1, f"scored twice: {counts.most_common(3)}"


def test_scores_every_event_once_while_following_the_trainers_promotions(
    driftline_env, spawn, scoring
):
    spawn("score", "--config", "examples/sea.toml", "--max-wait", "45", name="scorer")
    # Sent before any version exists: they wait for the first one rather than being dropped.
    scoring.send(200)
    start_sea_training(spawn)
    client = client_for(driftline_env)
    wait_for(
        lambda: scoring.send(100) or len(client.history("sea")) >= 3,
        timeout=45,
        what="the trainer's third version",
    )
    scoring.until_served_by(client.latest("sea").version)
    scoring.send(100)

    predictions = scoring.all_scored()
    assert_each_event_scored_once(predictions, scoring.sent)
    versions = served_versions(predictions)
    # Swapped mid-stream, forward only, between two events, and ending on the serving version.
    assert versions[0] == 1
    assert len(versions) >= 2
    assert versions == sorted(versions)
    assert versions[-1] == client.latest("sea").version
    assert {p["model"] for p in predictions} == {"sea"}
    assert all(set(p["probabilities"]) == {"false", "true"} for p in predictions)


def test_refuses_a_tampered_new_version_and_follows_rollback_and_promote(
    driftline_env, spawn, scoring, tmp_path
):
    client = train_sea(driftline_env, spawn)
    scorer = spawn("score", "--config", "examples/sea.toml", name="scorer")
    scoring.until_served_by(3)

    marker = tmp_path / "unpickled"
    publish_tampered_version(client, driftline_env, version=4, marker=marker)
    wait_for(
        lambda: "refusing sea v4" in Path(scorer.log_path).read_text(),
        timeout=30,
        what="the scorer to refuse v4",
    )
    assert not marker.exists()
    scoring.send(50)
    assert served_versions(scoring.all_scored()) == [3]

    client.rollback("sea", to=1, reason="v3 misbehaves")
    scoring.until_served_by(1)
    client.promote("sea", 2, reason="try the agile one")
    scoring.until_served_by(2)
    scoring.send(20)

    predictions = scoring.all_scored()
    assert_each_event_scored_once(predictions, scoring.sent)
    assert served_versions(predictions) == [3, 1, 2]
    assert scorer.poll() is None, "the scorer stopped"


def publish_tampered_version(
    client: RegistryClient, env: dict, *, version: int, marker: Path
) -> None:
    """Publish ``version`` of sea, correctly signed, then overwrite its artifact in Redis.

    The replacement bytes would create ``marker`` if anything unpickled them.
    """
    serving = client.latest("sea")
    model = client.load(serving)
    model.learn_one({"x0": 1.0, "x1": 2.0, "x2": 3.0}, True)  # other bytes than the served ones
    _, ref = artifacts.pack(
        model,
        prefix=env["DRIFTLINE_REDIS_PREFIX"],
        key=env["DRIFTLINE_SIGNING_KEY"].encode(),
    )
    store = redis.Redis.from_url(env["REDIS_URL"])
    store.set(ref.key, pickle.dumps(_CreatesFile(str(marker))))
    store.close()
    record = ModelVersion(
        model="sea",
        version=version,
        kind="challenger",
        candidate=serving.candidate,
        previous_version=serving.version,
        reason="a version whose artifact was replaced after it was signed",
        evidence={},
        lineage=serving.lineage,
        artifact=ref,
    )
    producer = KafkaProducer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    producer.send(client.topic, key=b"sea", value=record.to_json()).get(timeout=30)
    producer.close()


class _CreatesFile:
    """Unpickling this creates a file: proof that verification comes first."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return (open, (self.path, "w"))
