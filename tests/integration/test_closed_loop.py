"""Canary rollouts judged by live outcomes, and the loop closed through the join, on the broker."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from kafka import KafkaProducer
from pipeline import Deployment, wait_for
from registry_helpers import TopicReader, client_for, publish_records, train_sea

from streams.cli.demo.trials import publish_canary, train_candidate
from streams.contract import encode_outcome
from streams.registry.records import ModelVersion
from trainers.synthetic import drift_stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

GUARDRAIL = {
    # A trial that is clearly worse is stopped within a few hundred outcomes; rolling out within
    # a 20-point tolerance takes a few hundred per arm (the README has the 2-point figures).
    "DRIFTLINE__models__sea__rollout__min_outcomes": "200",
    "DRIFTLINE__models__sea__rollout__tolerance": "0.2",
    "DRIFTLINE__models__sea__label_horizon": "60s",
}


def _stream(deployment: Deployment, n: int, *, seed: int, first_id: int, rate: float = 500) -> None:
    """``n`` SEA events to score and, 0.2-1 s later, their outcomes."""
    rng = random.Random(seed)
    plan = []
    for i, (x, y) in enumerate(drift_stream("sea", n=n, drift_at=10**9, seed=seed)):
        event_id, at = f"c-{first_id + i}", i / rate
        event = {"event_id": event_id, "model": "sea", "ts": 1, "features": x}
        outcome = {"event_id": event_id, "model": "sea", "ts": 1, "label": y}
        plan.append((at, deployment.topics.unlabeled, orjson.dumps(event)))
        plan.append(
            (at + rng.uniform(0.2, 1.0), deployment.topics.outcomes, encode_outcome(outcome))
        )
    producer = KafkaProducer(bootstrap_servers=deployment.env["KAFKA_BOOTSTRAP_SERVERS"])
    start = time.monotonic()
    for at, topic, value in sorted(plan, key=lambda item: item[0]):
        if (wait := at - (time.monotonic() - start)) > 0:
            time.sleep(wait)
        producer.send(topic, key=b"sea", value=value)
    producer.flush()
    producer.close()


def _trial(env: dict, stable: ModelVersion, *, version: int, flip: bool) -> ModelVersion:
    """Publish ``version`` of sea as a 50% canary: a fresh 'agile' trained on SEA events, with
    every label flipped when ``flip`` (a deliberately bad model)."""
    spec = {"name": "agile", "river": "StandardScaler | LogisticRegression"}
    examples = drift_stream("sea", n=3_000, drift_at=10**9, seed=99)
    return publish_canary(
        train_candidate(spec, "classification", examples, flip=flip),
        name="agile",
        stable=stable,
        version=version,
        fraction=0.5,
        reason="a hand-made canary",
        operator="test",
        key=env["DRIFTLINE_SIGNING_KEY"].encode(),
        redis_prefix=env["DRIFTLINE_REDIS_PREFIX"],
        store=redis.Redis.from_url(env["REDIS_URL"]),
        publish=lambda record: publish_records(env, record),
    )


def _registry_until(env: dict, kind: str, count: int = 1) -> list[ModelVersion]:
    client = client_for(env)
    return wait_for(
        lambda: len(r := [x for x in client.history("sea") if x.kind == kind]) >= count and r,
        timeout=180,
        what=f"{count} {kind} record(s)",
        every=1.0,
    )


def test_a_worse_canary_is_rolled_back_and_a_good_one_rolled_out(driftline_env, spawn):
    env = {**driftline_env, **GUARDRAIL}
    deployment = Deployment(env)
    stable = train_sea(env, spawn, versions=1, events=2_000).history("sea")[0]
    scorer = spawn("score", "--config", "examples/sea.toml", env=env, name="scorer")

    _trial(env, stable, version=2, flip=True)
    _stream(deployment, 2_000, seed=1, first_id=0)
    [rollback] = _registry_until(env, "rollback")
    assert (rollback.version, rollback.previous_version, rollback.operator) == (1, 2, "guardrail")
    assert rollback.evidence["trial_version"] == 2
    assert rollback.evidence["lower"] > 0, rollback.evidence

    _trial(env, stable, version=3, flip=False)
    _stream(deployment, 4_000, seed=2, first_id=10_000)
    [rollout] = _registry_until(env, "rollout")
    assert (rollout.version, rollout.operator) == (3, "guardrail")
    assert rollout.evidence["upper"] <= 0.2, rollout.evidence

    # Scorers obey: after the rollout every event is served by v3 as stable.
    _stream(deployment, 200, seed=3, first_id=50_000)
    predictions = TopicReader(env, deployment.topics.predictions).wait_until(
        lambda records: any(r["event_id"] == "c-50199" for r in records),
        timeout=60,
        what="the last predictions",
    )
    late = [p for p in predictions if int(p["event_id"][2:]) >= 50_000]
    assert {(p["version"], p["arm"]) for p in late} == {(3, "stable")}
    # The trainer obeys too: its champion is the rolled-out version as served.
    trainer = spawn("worker", "--config", "examples/sea.toml", env=env, name="trainer-again")
    wait_for(
        lambda: "to v3" in Path(trainer.log_path).read_text(errors="replace"),
        timeout=60,
        what="the trainer to adopt v3",
    )
    assert scorer.poll() is None


def _fed_by_join(deployment: Deployment, events: list[dict[str, Any]]) -> None:
    """Events to score, and their labels only as outcomes, 0.1-0.5 s later."""
    rng = random.Random(4)
    plan = []
    for i, event in enumerate(events):
        at = i / 800
        unlabeled = {k: v for k, v in event.items() if k != "label"}
        outcome = {k: event[k] for k in ("event_id", "model", "ts", "label")}
        key = event["model"].encode()
        later = at + rng.uniform(0.1, 0.5)
        plan.append((at, deployment.topics.unlabeled, key, orjson.dumps(unlabeled)))
        plan.append((later, deployment.topics.outcomes, key, encode_outcome(outcome)))
    producer = KafkaProducer(bootstrap_servers=deployment.env["KAFKA_BOOTSTRAP_SERVERS"])
    start = time.monotonic()
    for at, topic, key, value in sorted(plan, key=lambda item: item[0]):
        if (wait := at - (time.monotonic() - start)) > 0:
            time.sleep(wait)
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def test_a_trainer_fed_only_through_the_join_promotes_after_a_concept_switch(driftline_env, spawn):
    deployment = Deployment(driftline_env)
    # v1 from 2,000 labeled events, so that the scorer has a version to serve; after that the
    # trainer learns only what the join gives it.
    spawn("worker", "--config", "examples/sea.toml", name="trainer")
    train_events = [
        {"event_id": f"j-{i}", "model": "sea", "ts": 1, "features": x, "label": y}
        for i, (x, y) in enumerate(drift_stream("sea", n=26_000, drift_at=12_000, seed=42))
    ]
    from pipeline import encoded

    deployment.send_raw(encoded(train_events[:2_000]))
    client = client_for(driftline_env)
    wait_for(lambda: client.history("sea"), timeout=60, what="v1")
    spawn("score", "--config", "examples/sea.toml", name="scorer")
    _fed_by_join(deployment, train_events[2_000:])
    versions = wait_for(
        lambda: [v for v in client.history("sea") if v.kind == "challenger"],
        timeout=180,
        what="a promotion after the switch, learned through the join",
        every=1.0,
    )
    assert versions[0].evidence["window"][0] > 12_000
    trainer = deployment.wait_until_learned("sea", len(train_events), timeout=120)
    assert trainer.events == len(train_events), "every joined event learned once"


FRIEDMAN = """
models:
  friedman:
    task: regression
    window: 500
    champion: slow
    label_horizon: 60s
    policy: {metric: mae, loss_scale: 10, warmup: 500, every: 250, min_samples: 500, margin: 0.05,
             alpha: 0.01}
    candidates:
      - {name: slow, river: "StandardScaler | LinearRegression",
         params: {LinearRegression: {optimizer: {SGD: 0.005}}}}
      - {name: fast, river: "StandardScaler | LinearRegression",
         params: {LinearRegression: {optimizer: {SGD: 0.05}}}}
"""


def test_regression_goes_through_the_whole_loop_with_mae_as_the_live_metric(
    driftline_env, spawn, tmp_path
):
    from river.datasets import synth

    config = tmp_path / "friedman.yaml"
    config.write_text(FRIEDMAN)
    deployment = Deployment(driftline_env, config_path=config)
    events = [
        {
            "event_id": f"f-{i}",
            "model": "friedman",
            "ts": 1,
            "label": y,
            "features": {f"x{k}": v for k, v in x.items()},
        }
        for i, (x, y) in enumerate(
            synth.FriedmanDrift(drift_type="gra", position=(3_000, 5_000), seed=42).take(8_000)
        )
    ]
    from pipeline import encoded

    spawn("worker", "--config", str(config), name="trainer")
    deployment.send_raw(encoded(events[:1_000]))
    client = client_for(driftline_env)
    wait_for(lambda: client.history("friedman"), timeout=60, what="v1")
    spawn("score", "--config", str(config), name="scorer")
    _fed_by_join(deployment, events[1_000:])

    trainer = deployment.wait_until_learned("friedman", len(events), timeout=180)
    assert trainer.events == len(events)
    live = wait_for(
        lambda: [
            r
            for r in TopicReader(driftline_env, deployment.topics.metrics).read(2.0)
            if r.get("kind") == "live" and r["joined"] > 0
        ],
        timeout=60,
        what="a live report",
    )
    cumulative = live[-1]["metrics"]["cumulative"]
    assert cumulative["mae"] is not None and cumulative["mae"] > 0
    predictions = TopicReader(driftline_env, deployment.topics.predictions).read(2.0)
    assert predictions and all(isinstance(p["prediction"], float) for p in predictions)
