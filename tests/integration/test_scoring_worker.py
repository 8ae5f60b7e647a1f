"""The scoring worker (``driftline score``) against a real broker, Redis and trainer."""

from __future__ import annotations

import itertools
import pickle
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pipeline import Deployment, wait_for
from registry_helpers import (
    CreatesFile,
    Scoring,
    client_for,
    publish_hand_made_version,
    serving_changes,
    start_sea_training,
    train_sea,
)

from streams.admin import ensure_topics
from streams.registry.artifacts import Artifact
from streams.registry.client import RegistryClient


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
    # The topics exist before the first event, as a deployment creates them: a topic the broker
    # creates on the first write gets one partition, and the workers refuse an unlabeled topic
    # whose partitions differ from the outcomes' (streams.admin's start check).
    deployment = Deployment(driftline_env)
    ensure_topics(
        deployment.topics, deployment.kafka, partitions=deployment.config().worker.partitions
    )
    spawn("score", "--config", "examples/sea.toml", "--max-wait", "45", name="scorer")
    # Sent before any version exists: they wait for the first one rather than being dropped.
    scoring.send(200)
    start_sea_training(spawn)
    client = client_for(driftline_env)
    wait_for(
        lambda: scoring.send(100) or len(serving_changes(client.history("sea"))) >= 2,
        timeout=45,
        what="the trainer's second version",
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
    scoring.until_served_by(2)

    marker = tmp_path / "unpickled"
    publish_tampered_version(client, driftline_env, version=3, marker=marker)
    wait_for(
        lambda: "refusing sea v3" in Path(scorer.log_path).read_text(),
        timeout=30,
        what="the scorer to refuse v3",
    )
    assert not marker.exists()
    scoring.send(50)
    assert served_versions(scoring.all_scored()) == [2]

    client.rollback("sea", to=1, reason="v2 misbehaves")
    scoring.until_served_by(1)
    client.promote("sea", 2, reason="try the agile one")
    scoring.until_served_by(2)
    scoring.send(20)

    predictions = scoring.all_scored()
    assert_each_event_scored_once(predictions, scoring.sent)
    assert served_versions(predictions) == [2, 1, 2]
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
    ref = Artifact.pack(
        model,
        model="sea",
        version=version,
        prefix=env["DRIFTLINE_REDIS_PREFIX"],
        key=env["DRIFTLINE_SIGNING_KEY"].encode(),
    ).ref
    store = redis.Redis.from_url(env["REDIS_URL"])
    store.set(ref.key, pickle.dumps(CreatesFile(str(marker))))
    store.close()
    publish_hand_made_version(
        env,
        serving,
        version=version,
        artifact=ref,
        reason="a version whose artifact was replaced after it was signed",
    )
