"""The scorer's join of late outcomes to served predictions, on the real broker and Redis."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from pipeline import Deployment, wait_for
from registry_helpers import TopicReader, train_sea, unlabeled_sea_events

from streams.contract import encode_outcome

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HORIZON = 15.0


def _plan(events: list[dict[str, Any]], seed: int) -> list[tuple[float, str, bytes, bytes]]:
    """When to send each event and outcome (seconds from the start), by a seeded draw.

    Events go out 400 per second; an outcome 1-4 s after its event, 10% before it, 1% never;
    50 outcomes name events that are never sent.
    """
    rng = random.Random(seed)
    plan = []
    for i, event in enumerate(events):
        at = i / 400
        unlabeled = {k: v for k, v in event.items() if k != "label"}
        plan.append((at, "unlabeled", b"sea", orjson.dumps(unlabeled)))
        draw = rng.random()
        if draw < 0.01:
            continue
        delay = -rng.uniform(0.05, 0.5) if draw < 0.11 else rng.uniform(1, 4)
        outcome = {"event_id": event["event_id"], "model": "sea", "ts": 1, "label": event["label"]}
        plan.append((max(at + delay, 0), "outcomes", b"sea", encode_outcome(outcome)))
    for n in range(50):
        orphan = {"event_id": f"never-{n}", "model": "sea", "ts": 1, "label": True}
        plan.append((rng.uniform(0, len(events) / 400), "outcomes", b"sea", encode_outcome(orphan)))
    return sorted(plan, key=lambda item: item[0])


def _send(deployment: Deployment, plan: list[tuple[float, str, bytes, bytes]]) -> None:
    topics = {"unlabeled": deployment.topics.unlabeled, "outcomes": deployment.topics.outcomes}
    producer = KafkaProducer(
        bootstrap_servers=deployment.env["KAFKA_BOOTSTRAP_SERVERS"], acks="all"
    )
    start = time.monotonic()
    for at, topic, key, value in plan:
        wait = at - (time.monotonic() - start)
        if wait > 0:
            time.sleep(wait)
        producer.send(topics[topic], key=key, value=value)
    producer.flush()
    producer.close()


def _joined(deployment: Deployment, expected: int) -> list[dict[str, Any]]:
    reader = TopicReader(deployment.env, deployment.topics.labeled)
    records = reader.wait_until(
        lambda records: len({r["event_id"] for r in records if "join" in r}) >= expected,
        timeout=120,
        what=f"{expected} joined records",
    )
    reader.close()
    return [r for r in records if "join" in r]


def _live(deployment: Deployment) -> dict[tuple[int, str], dict[str, Any]]:
    reader = TopicReader(deployment.env, deployment.topics.metrics)
    time.sleep(6)  # one more report than the last join
    reports = [r for r in reader.read(2.0) if r.get("kind") == "live"]
    reader.close()
    latest: dict[tuple[int, str], dict[str, Any]] = {}
    for report in reports:
        latest[(report["version"], report["arm"])] = report
    return latest


@pytest.fixture
def scoring_env(driftline_env: dict, spawn) -> dict:
    """A deployment whose trainer published v1 of sea and stopped; horizons of 15 s."""
    env = {**driftline_env, "DRIFTLINE__models__sea__label_horizon": f"{HORIZON:g}s"}
    train_sea(env, spawn, versions=1, events=2_000)
    return env


def test_every_outcome_is_joined_once_and_the_rest_expire_or_are_dead_lettered(scoring_env, spawn):
    deployment = Deployment(scoring_env)
    events = [{**e, "label": e["label"]} for e in _labeled(3_000)]
    plan = _plan(events, seed=11)
    matched = {
        orjson.loads(value)["event_id"] for _, topic, _, value in plan if topic == "outcomes"
    } - {f"never-{n}" for n in range(50)}
    scorer = spawn("score", "--config", "examples/sea.toml", env=scoring_env, name="scorer")
    _send(deployment, plan)

    joined = _joined(deployment, len(matched))
    assert Counter(r["event_id"] for r in joined) == Counter(matched), "each pair joined once"
    labels = {e["event_id"]: e["label"] for e in events}
    assert all(r["label"] == labels[r["event_id"]] for r in joined)
    assert len({(r["join"]["source"], r["join"]["seq"]) for r in joined}) == len(joined)

    predictions = TopicReader(scoring_env, deployment.topics.predictions).wait_until(
        lambda records: len(records) >= len(events), timeout=60, what="every prediction"
    )
    assert Counter(p["event_id"] for p in predictions) == Counter(e["event_id"] for e in events)
    assert {p["arm"] for p in predictions} == {"stable"}

    letters = TopicReader(scoring_env, deployment.topics.dlq).wait_until(
        lambda records: len(records) >= 50, timeout=HORIZON + 60, what="the unmatched outcomes"
    )
    assert Counter(d["reason_code"] for d in letters) == {"no_prediction": 50}
    live = wait_for(
        lambda: (
            (r := _live(deployment))
            and r[(1, "stable")]["expired"] == len(events) - len(matched)
            and r
        ),
        timeout=HORIZON + 60,
        what="the expired predictions counted",
    )
    report = live[(1, "stable")]
    assert report["served"] == len(events)
    assert report["joined"] == len(matched)
    assert report["unmatched"] == 50
    assert scorer.poll() is None


def test_a_killed_scorer_joins_and_scores_as_an_uninterrupted_one(scoring_env, spawn):
    deployment = Deployment(scoring_env)
    events = _labeled(4_000)
    plan = _plan(events, seed=5)
    matched = {
        orjson.loads(value)["event_id"] for _, topic, _, value in plan if topic == "outcomes"
    } - {f"never-{n}" for n in range(50)}
    scorer = spawn("score", "--config", "examples/sea.toml", env=scoring_env, name="scorer-0")
    kill_at = sorted(random.Random(3).sample(range(1, int(len(events) / 400)), 3))
    start = time.monotonic()
    cut = 0
    for kills, at in enumerate(kill_at, start=1):
        chunk = [item for item in plan if cut <= item[0] < at]
        _send(deployment, [(t - cut, *rest) for t, *rest in chunk])
        cut = at
        scorer.send_signal(signal.SIGKILL)
        scorer.wait()
        scorer = spawn(
            "score", "--config", "examples/sea.toml", env=scoring_env, name=f"scorer-{kills}"
        )
    _send(deployment, [(t - cut, *rest) for t, *rest in plan if t >= cut])
    print(f"sent in {time.monotonic() - start:.1f} s with SIGKILLs at {kill_at}")

    joined = _joined(deployment, len(matched))
    firsts = {}
    for record in joined:
        key = (record["join"]["source"], record["join"]["seq"])
        firsts.setdefault(key, record["event_id"])
    # Republished entries repeat their (source, seq): the trainer keeps one of each.
    assert Counter(firsts.values()) == Counter(matched), "each pair joined once"

    live = wait_for(
        lambda: (r := _live(deployment)) and r[(1, "stable")]["joined"] == len(matched) and r,
        timeout=60,
        what="the live metrics of every join",
    )
    predicted = _v1_predictions(deployment, events)
    correct = sum(
        predicted[e["event_id"]] == e["label"] for e in events if e["event_id"] in matched
    )
    cumulative = live[(1, "stable")]["metrics"]["cumulative"]
    assert cumulative["n"] == len(matched)
    assert cumulative["accuracy"] == pytest.approx(correct / len(matched))


def _labeled(n: int) -> list[dict[str, Any]]:
    return [event for _, event in zip(range(n), unlabeled_sea_events(seed=21), strict=False)]


def _v1_predictions(deployment: Deployment, events: list[dict[str, Any]]) -> dict[str, Any]:
    """What v1 predicts for each event, computed here from its artifact."""
    from streams.registry import artifacts

    record = deployment.registry()[0]
    key = deployment.env["DRIFTLINE_SIGNING_KEY"].encode()
    model = artifacts.load(deployment.redis(), record, key=key)
    return {e["event_id"]: model.predict_with_proba(e["features"])[0] for e in events}
