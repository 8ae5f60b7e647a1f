"""SIGKILLs during a window refit and right after a drift record: the registry (drift, action and
promotion records) and the artifacts are those of an uninterrupted run."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
from pathlib import Path

import pytest
from pipeline import Deployment, encoded, sea_events, wait_for

from streams.contract import event_position
from streams.registry.artifacts import Artifact
from streams.registry.records import ModelVersion, RecordKind
from trainers.trainer import ModelTrainer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CONFIG = """
[models.sea]
task = "classification"
window = 1000
champion = "steady"

[models.sea.policy]
metric = "accuracy"
warmup = 1000
every = 500
min_samples = 1000
margin = 0.01
alpha = 0.01
cooldown = 2000

[models.sea.drift]
detector = "ADWIN"
actions = ["reset", "refit", "shorten_cooldown"]
reset = "steady"
min_events_between_actions = 2000
cooldown_after_drift = 500

[[models.sea.candidates]]
name = "steady"
river = "StandardScaler | LogisticRegression"
params = { LogisticRegression = { optimizer = { SGD = 0.01 } } }

[[models.sea.candidates]]
name = "window"
sklearn_window = "HistGradientBoostingClassifier"
window_events = 3000
refit_every = 3000
refit_lag = 300
params = { max_iter = 100 }
"""
EVENTS = 12_000


def test_sigkills_in_a_refit_and_after_a_drift_record_change_no_record_nor_artifact(
    driftline_env, spawn, tmp_path: Path
):
    seed = int(os.environ.get("DRIFTLINE_FAULT_SEED", random.randrange(10_000)))
    print(f"fault seed: {seed} (DRIFTLINE_FAULT_SEED={seed} repeats this run)")
    rng = random.Random(seed)
    config_path = tmp_path / "drift.toml"
    config_path.write_text(CONFIG)
    deployment = Deployment(driftline_env, config_path=config_path)
    events = sea_events(EVENTS, drift_at=EVENTS // 2)
    expected, refits = _uninterrupted(deployment, events)
    drift_event = next(r.lineage["event"] for r in expected if r.kind is RecordKind.DRIFT)
    # A scheduled refit cut after the drift, whose result is due refit_lag events later.
    refit_cut = next(cut for cut in refits if cut > drift_event + 500)
    args = ("worker", "--config", str(config_path), "--log-level", "info")

    # 1. Right after the drift record: the worker is still learning the events that follow it.
    worker = spawn(*args, name="trainer")
    sent = drift_event + rng.randrange(50, 500)
    deployment.send_raw(encoded(events[:sent]))
    wait_for(
        lambda: any(r.kind is RecordKind.DRIFT for r in deployment.registry(notices=True)),
        timeout=180,
        what="the drift record",
    )
    worker.send_signal(signal.SIGKILL)
    worker.wait()

    # 2. During a refit: its job is cut (and fitting in the worker's pool), its result not due.
    killed_at = refit_cut + rng.randrange(1, 300)
    worker = spawn(*args, name="trainer-1")
    deployment.send_raw(encoded(events[sent:killed_at]))
    trainer = deployment.wait_until_learned("sea", killed_at, timeout=300)
    assert [job.cut for job in trainer.refit_jobs()] == [refit_cut], "a refit must be pending"
    worker.send_signal(signal.SIGKILL)
    worker.wait()

    worker = spawn(*args, name="trainer-2")
    deployment.send_raw(encoded(events[killed_at:]))
    trainer = deployment.wait_until_learned("sea", EVENTS, timeout=300)
    published = wait_for(
        lambda: len(r := deployment.registry(notices=True)) >= len(expected) and r,
        timeout=60,
        what="every record",
    )
    assert [(r.kind, r.version) for r in published] == [(r.kind, r.version) for r in expected]
    for got, want in zip(published, expected, strict=True):
        assert _comparable(got) == _comparable(want)
    client = deployment.redis()
    versions = [r for r in published if r.notice_sequence is None]
    assert all(client.exists(r.artifact.key) for r in versions)
    assert trainer.candidate("window").n_refits == len(
        [cut for cut in refits if cut <= EVENTS - 300]
    )


def _uninterrupted(deployment: Deployment, events) -> tuple[list[ModelVersion], list[int]]:
    """The records an uninterrupted worker publishes (with its artifacts' digests), from the
    same events through one in-process trainer, and the events at which refit jobs were cut."""
    config = deployment.config()
    trainer = ModelTrainer(config.models["sea"])
    key = deployment.env["DRIFTLINE_SIGNING_KEY"].encode()
    source = f"{deployment.topics.labeled}[0]"
    records, refits = [], []
    for offset, event in enumerate(events):
        serving = trainer.champion_version or 0
        promotion = trainer.learn(
            event["features"],
            event["label"],
            source=source,
            position=event_position(offset, None),
        )
        refits.extend(job.cut for job in trainer.refit_jobs() if job.cut == trainer.events)
        records.extend(ModelVersion.from_notice(n, serving) for n in trainer.take_notices())
        if promotion is not None:
            artifact = Artifact.pack(
                promotion.estimator,
                model="sea",
                version=promotion.version,
                prefix=deployment.env["DRIFTLINE_REDIS_PREFIX"],
                key=key,
            )
            records.append(ModelVersion.from_promotion(promotion, artifact.ref))
    return records, sorted(set(refits))


def _comparable(record: ModelVersion) -> dict:
    """A record without what differs between two runs: its time, the signature over it, and the
    versions of what ran it."""
    fields = dataclasses.asdict(record)
    for varying in ("created_at", "signature", "libraries"):
        fields.pop(varying)
    return fields
