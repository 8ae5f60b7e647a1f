"""The story the end-to-end test on Kafka repeats, run in-process with examples/sea.toml.

40,000 SEA events with an abrupt concept switch after event 20,000: the configured champion
"steady" is published as version 1 after warmup, holds while the concept holds, ADWIN detects the
switch on its errors, and "agile" is promoted as a challenger on evidence gathered entirely after
the switch.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from trainers.sequential import METHOD
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

CONFIG = Path(__file__).parents[3] / "examples" / "sea.toml"
EVENTS, DRIFT_AT, SEED = 40_000, 20_000, 42


def test_sea_story():
    spec = ModelSpec.from_dict("sea", tomllib.loads(CONFIG.read_text())["models"]["sea"])
    trainer = ModelTrainer(spec)
    promotions = []
    for position, (x, y) in enumerate(drift_stream("sea", EVENTS, DRIFT_AT, seed=SEED)):
        promotion = trainer.learn(x, y, source="sea", position=position)
        if promotion is not None:
            promotions.append(promotion)

    initial, *challengers = promotions
    assert (initial.version, initial.kind, initial.candidate) == (1, "initial", "steady")
    assert initial.lineage["events"] == spec.policy.warmup

    # Nothing happens while the first concept holds.
    assert all(p.evidence["window"][0] > DRIFT_AT for p in challengers)
    first = challengers[0]
    assert (first.version, first.previous_version) == (2, 1)
    assert (first.kind, first.candidate) == ("challenger", "agile")
    evidence = first.evidence
    assert evidence["champion"] == "steady"
    assert evidence["test"] == METHOD
    assert evidence["lower"] > evidence["threshold"] == spec.policy.margin
    assert evidence["alpha_spent"] < spec.policy.alpha
    detection = trainer.take_detections()[0]
    assert (detection.candidate, detection.detector) == ("steady", "ADWIN")
    assert DRIFT_AT < detection.event <= evidence["window"][0]
    # Promoted promptly: within the first two policy evaluations that see only the new concept.
    assert evidence["window"][1] <= DRIFT_AT + 2 * spec.policy.min_samples
