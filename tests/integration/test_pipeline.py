"""The retraining pipeline end to end: labeled events in, promoted model versions out."""

from __future__ import annotations

import itertools
import math
import signal

import orjson
import pytest
from pipeline import Deployment, encoded, sea_events, train_in_process, wait_for

from streams.contract import decode_dead_letter
from streams.registry import artifacts
from streams.registry.records import NOTICE_KINDS, RecordKind
from trainers.serialization import sha256_hex

pytestmark = pytest.mark.timeout(300)

PROBE = [event["features"] for event in sea_events(500, drift_at=250, seed=7)]


def test_sea_drift_promotes_after_the_switch_and_every_artifact_loads(driftline_env, spawn):
    deployment = Deployment(driftline_env)
    config = deployment.config()
    events = sea_events()
    spawn("worker", "--config", "examples/sea.toml", name="trainer")
    wait_for(lambda: deployment.topics.labeled in _topics(deployment), timeout=60, what="topics")
    deployment.send_raw(encoded(events))

    trainer = deployment.wait_until_learned("sea", len(events))
    records = wait_for(
        lambda: (v := deployment.registry(notices=True)) and len(v) >= 3 and v,
        timeout=30,
        what="versions",
    )
    # examples/sea.toml watches the champion with ADWIN: its drift notices name no new version.
    drifts = [r for r in records if r.kind == RecordKind.DRIFT]
    assert drifts and all(r.evidence["detector"] == "ADWIN" for r in drifts)
    versions = [r for r in records if r.kind not in NOTICE_KINDS]

    first = versions[0]
    assert (first.version, first.kind, first.previous_version) == (1, "initial", None)
    assert first.lineage["events"] >= config.models["sea"].policy.warmup
    after_switch = [
        v for v in versions if v.kind == "challenger" and v.evidence["window"][0] > 20_000
    ]
    assert after_switch, [(v.version, v.evidence.get("window")) for v in versions]
    assert [v.version for v in versions] == list(range(1, len(versions) + 1))
    for previous, version in itertools.pairwise(versions):
        assert version.previous_version == previous.version

    key = driftline_env["DRIFTLINE_SIGNING_KEY"].encode()
    client = deployment.redis()
    for version in versions:
        assert sha256_hex(client.get(version.artifact.key)) == version.artifact.sha256
        model = artifacts.load(client, version, key=key)
        assert model.name == version.candidate["name"]
        assert all(model.predict_one(x) in (True, False) for x in PROBE[:50])
        assert {"window", "n", "p_value", "statistic"} <= set(version.evidence) or (
            version.kind == "initial"
        )
        assert {"source", "first_offset", "last_offset", "events"} <= set(version.lineage)
        assert {"python", "river", "scikit-learn"} <= set(version.libraries)

    # The worker is the uninterrupted in-process run, event for event.
    reference, promotions = train_in_process(config, events, deployment.topics.labeled)
    assert [(v.version, v.kind, v.candidate["name"], v.evidence) for v in versions] == [
        (p.version, p.kind, p.candidate, p.evidence) for p in promotions
    ]
    assert trainer.learned == reference.learned == {"steady": 40_000, "agile": 40_000}


def test_a_killed_worker_resumes_and_learns_every_event_once(driftline_env, spawn):
    deployment = Deployment(driftline_env)
    events = sea_events()
    worker = spawn("worker", "--config", "examples/sea.toml", name="trainer")
    wait_for(lambda: deployment.topics.labeled in _topics(deployment), timeout=60, what="topics")
    deployment.send_raw(encoded(events))

    deployment.wait_until_learned("sea", 12_000)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    restarted = spawn("worker", "--config", "examples/sea.toml", name="trainer-restarted")
    deployment.wait_until_learned("sea", 26_000)
    restarted.terminate()  # and once gracefully
    assert restarted.wait(30) == 0
    spawn("worker", "--config", "examples/sea.toml", name="trainer-third")
    trainer = deployment.wait_until_learned("sea", len(events))

    reference, promotions = train_in_process(deployment.config(), events, deployment.topics.labeled)
    assert trainer.learned == reference.learned == {"steady": 40_000, "agile": 40_000}
    assert trainer.events == 40_000
    versions = wait_for(
        lambda: (v := deployment.registry()) and len(v) >= len(promotions) and v,
        timeout=30,
        what="versions",
    )
    assert [(v.version, v.candidate["name"]) for v in versions] == [
        (p.version, p.candidate) for p in promotions
    ]
    assert trainer.champion == reference.champion
    champion, expected = trainer.candidate(trainer.champion), reference.candidate(trainer.champion)
    assert [champion.predict_proba_one(x) for x in PROBE] == [
        expected.predict_proba_one(x) for x in PROBE
    ]


def test_malformed_events_go_to_the_dead_letter_topic_and_learning_goes_on(driftline_env, spawn):
    deployment = Deployment(driftline_env)
    good = sea_events(3_000, drift_at=10_000)
    bad = [
        (b"sea", b"not json at all", "not_json"),
        (b"sea", b'{"event_id": "x", "model": "sea"', "not_json"),
        (b"sea", orjson.dumps({"event_id": "x", "model": "sea", "ts": 1}), "missing_field"),
        (
            b"sea",
            b'{"event_id":"x","model":"sea","ts":1,"features":{"a":NaN},"label":1}',
            "non_finite",
        ),
        (b"sea", orjson.dumps({**good[0], "features": {"a": "x" * 1_010_000}}), "oversize"),
        (b"nobody", orjson.dumps({**good[0], "model": "nobody"}), "unknown_model"),
        (b"sea", orjson.dumps({**good[0], "label": 2.5}), "label_mismatch"),
    ]
    records = list(encoded(good))
    for index, (key, value, _) in enumerate(bad):
        records.insert(300 * (index + 1), (key, value))
    spawn("worker", "--config", "examples/sea.toml", name="trainer")
    wait_for(lambda: deployment.topics.labeled in _topics(deployment), timeout=60, what="topics")
    deployment.send_raw(records)

    trainer = deployment.wait_until_learned("sea", len(good))
    assert trainer.learned == {"steady": len(good), "agile": len(good)}
    letters = wait_for(
        lambda: len(d := _dead_letters(deployment)) >= len(bad) and d, timeout=30, what="DLQ"
    )
    assert sorted(letter["reason_code"] for letter in letters) == sorted(c for *_, c in bad)
    assert sorted(letter["original"] for letter in letters) == sorted(v for _, v, _ in bad)
    for letter in letters:
        assert letter["reason"]
        assert letter["source"]["topic"] == deployment.topics.labeled
        assert not math.isnan(letter["source"]["offset"])


def _topics(deployment: Deployment) -> set[str]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**deployment.kafka)
    try:
        return consumer.topics()
    finally:
        consumer.close()


def _dead_letters(deployment: Deployment) -> list[dict]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        deployment.topics.dlq,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2_000,
        **deployment.kafka,
    )
    try:
        return [decode_dead_letter(record.value) for record in consumer]
    finally:
        consumer.close()
