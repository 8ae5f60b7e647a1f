"""Dead letters exactly once across SIGKILLs of the trainer: a replay after a crash publishes no
dead letter the topic already holds (streams.workers.deadletters), and every good event around
them is learned exactly once."""

from __future__ import annotations

import os
import random
import signal

import orjson
import pytest
from kafka import KafkaConsumer
from pipeline import Deployment, sea_events, train_in_process, wait_for

from streams.contract import encode_batch, encode_event

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

GOOD_EVENTS = 20_000
BLOCK = 100
"""Good events per block; each block holds one malformed event."""
BATCH = 40


def _bad(event: dict, kind: int) -> bytes:
    """A malformed event: not JSON, or JSON that breaks the contract, in turns."""
    if kind == 0:
        return b"not json at all " + event["event_id"].encode()
    if kind == 1:
        return encode_event(event)[:-7]  # cut short: not JSON either
    if kind == 2:
        return orjson.dumps({k: v for k, v in event.items() if k != "label"})
    return orjson.dumps({**event, "features": [1, 2, 3]})


def _records(good: list[dict]) -> tuple[list[tuple[bytes, bytes]], int]:
    """The labeled topic's records: blocks of good events, each with one malformed event, as a
    single-event record (even blocks) or inside a batch record (odd blocks)."""
    records: list[tuple[bytes, bytes]] = []
    bad = 0
    for number, start in enumerate(range(0, len(good), BLOCK)):
        block = [encode_event(event) for event in good[start : start + BLOCK]]
        single = number % 2 == 0
        # Singles take every kind in turn; a batch only JSON (a non-JSON part spoils the batch).
        kind = (number // 2) % 4 if single else 2 + (number // 2) % 2
        malformed = _bad(good[start], kind)
        bad += 1
        if single:
            singles = [*block[: BLOCK // 2], malformed, *block[BLOCK // 2 :]]
            records += [(b"sea", value) for value in singles]
        else:
            batch = block[BLOCK - BATCH :]
            batch.insert(number % BATCH, malformed)
            records += [(b"sea", value) for value in block[: BLOCK - BATCH]]
            records.append((b"sea", encode_batch(batch)))
    return records, bad


def test_sigkills_publish_each_dead_letter_once(driftline_env, spawn):
    seed = int(os.environ.get("DRIFTLINE_FAULT_SEED", random.randrange(10_000)))
    print(f"fault seed: {seed} (DRIFTLINE_FAULT_SEED={seed} repeats this run)")
    deployment = Deployment(driftline_env)
    good = sea_events(GOOD_EVENTS, drift_at=GOOD_EVENTS // 2)
    records, bad = _records(good)
    assert bad == 200
    kill_points = sorted(random.Random(seed).sample(range(1_000, GOOD_EVENTS - 1_000), 4))
    worker = spawn("worker", "--config", "examples/sea.toml", name="trainer")
    deployment.send_raw(records)

    for kills, point in enumerate(kill_points, start=1):
        deployment.wait_until_learned("sea", point, timeout=180)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker = spawn("worker", "--config", "examples/sea.toml", name=f"trainer-{kills}")
    trainer = deployment.wait_until_learned("sea", GOOD_EVENTS, timeout=180)

    keys = wait_for(
        lambda: len(k := _dead_letter_keys(deployment)) >= bad and k, timeout=60, what="the DLQ"
    )
    assert len(keys) == bad, f"{len(keys) - len(set(keys))} dead letters published twice"
    assert len(set(keys)) == bad
    reference, _ = train_in_process(deployment.config(), good, deployment.topics.labeled)
    assert trainer.learned == reference.learned == {"steady": GOOD_EVENTS, "agile": GOOD_EVENTS}
    probe = [event["features"] for event in sea_events(300, drift_at=150, seed=7)]
    live, expected = trainer.candidate(trainer.champion), reference.candidate(reference.champion)
    assert trainer.champion == reference.champion
    assert [live.predict_proba_one(x) for x in probe] == [
        expected.predict_proba_one(x) for x in probe
    ]


def _dead_letter_keys(deployment: Deployment) -> list[bytes]:
    consumer = KafkaConsumer(
        deployment.topics.dlq,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3_000,
        **deployment.kafka,
    )
    try:
        return [record.key for record in consumer]
    finally:
        consumer.close()
