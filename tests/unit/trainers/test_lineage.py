"""The lineage a trainer keeps: exactly what its state learned, adopted and ran under."""

from __future__ import annotations

import pickle
import tomllib
from pathlib import Path

import pytest

from trainers.errors import LabelError
from trainers.lineage import Lineage, positions_digest, spec_table
from trainers.serialization import canonical_dumps
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

EXAMPLES = Path(__file__).parents[3] / "examples"
TABLE = {
    "task": "classification",
    "champion": "slow",
    "candidates": [
        {"name": "slow", "river": "StandardScaler | LogisticRegression"},
        {"name": "nb", "river": "naive_bayes.GaussianNB"},
    ],
    "policy": {"warmup": 100, "every": 100, "min_samples": 100, "cooldown": 100},
}


def spec(**changes) -> ModelSpec:
    return ModelSpec.from_dict("sea", {**TABLE, **changes})


def test_the_lineage_names_the_positions_learned_and_skipped():
    trainer = ModelTrainer(spec())
    learned = []
    for position, (x, y) in enumerate(drift_stream("sea", n=100, drift_at=100, seed=1)):
        if position == 10:
            trainer.skip("t[0]", position)  # a duplicate the worker dropped
            continue
        if position == 20:
            with pytest.raises(LabelError):
                trainer.learn(x, 1.5, source="t[0]", position=position)
            continue
        trainer.learn(x, y, source="t[0]", position=position)
        learned.append(position)
    (span,) = trainer.lineage["ranges"]
    assert (span["first_offset"], span["last_offset"], span["events"]) == (0, 99, 98)
    assert span["learned_sha256"] == positions_digest(learned)
    assert span["skipped"] == {
        "count": 2,
        "sha256": positions_digest([10, 20]),
        "offsets": [10, 20],
    }
    assert trainer.lineage["events"] == trainer.events == 98


def test_adoptions_and_configurations_are_kept_where_they_happened():
    trainer = ModelTrainer(spec())
    events = list(drift_stream("sea", n=400, drift_at=400, seed=2))
    for position, (x, y) in enumerate(events[:150]):
        trainer.learn(x, y, source="t[0]", position=position)
    trainer.adopt(1, "slow", "rollback by alice: test", origin={"registry_offset": 7})
    changed = spec(policy={**TABLE["policy"], "margin": 0.05})
    trainer, _ = ModelTrainer.restore(trainer.snapshot(), changed, reset=["nb"])
    lineage = trainer.lineage
    assert lineage["adoptions"] == [
        {
            "events": 150,
            "step": 1,
            "version": 1,
            "candidate": "slow",
            "reason": "rollback by alice: test",
            "artifact": False,
            "registry_offset": 7,
        }
    ]
    first, second = lineage["configurations"]
    assert (first["events"], second["events"], second["reset"]) == (0, 150, [])
    assert (first["step"], second["step"]) == (0, 2)  # the adoption came between them
    assert ModelSpec.from_dict("sea", second["table"]) == changed
    assert first["sha256"] != second["sha256"]
    assert lineage["verifiable"]


def test_restoring_an_unchanged_configuration_records_nothing():
    trainer = ModelTrainer(spec())
    trainer, _ = ModelTrainer.restore(trainer.snapshot(), spec())
    assert len(trainer.lineage["configurations"]) == 1


def test_a_snapshot_from_before_lineage_is_restored_as_unverifiable():
    trainer = ModelTrainer(spec())
    for position, (x, y) in enumerate(drift_stream("sea", n=50, drift_at=50, seed=3)):
        trainer.learn(x, y, source="t[0]", position=position + 5)
    # A format-4 trainer kept only the first and last position of each source.
    old = vars(trainer)
    old["_positions"] = trainer._lineage.spans
    del old["_lineage"]
    old["_format"] = 4
    restored, _ = ModelTrainer.restore(pickle.dumps(trainer), spec())
    lineage = restored.lineage
    assert lineage["ranges"][0]["first_offset"] == 5
    assert restored.last_position("t[0]") == 54
    assert not lineage["verifiable"]
    assert lineage["unverifiable"] == [
        "its first 50 events were learned before driftline recorded complete lineage"
    ]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda path: path.name)
def test_every_example_configuration_is_recorded_as_a_table_that_reads_back(path):
    for name, table in tomllib.loads(path.read_text()).get("models", {}).items():
        model = ModelSpec.from_dict(name, table)
        assert ModelSpec.from_dict(name, spec_table(model)) == model


def test_a_restored_trainer_gives_the_bytes_of_an_uninterrupted_one():
    events = list(drift_stream("sea", n=2000, drift_at=1000, seed=4))
    uninterrupted, restored = ModelTrainer(spec()), ModelTrainer(spec())
    for position, (x, y) in enumerate(events):
        uninterrupted.learn(x, y, source="t[0]", position=position)
        restored.learn(x, y, source="t[0]", position=position)
        if position % 300 == 0:  # a worker killed and restarted from its checkpoint
            restored, _ = ModelTrainer.restore(restored.snapshot(), spec())
    for name in ("slow", "nb"):
        assert canonical_dumps(restored.candidate(name)) == canonical_dumps(
            uninterrupted.candidate(name)
        )
    assert restored.lineage == uninterrupted.lineage


def test_many_skipped_positions_are_kept_as_a_count_and_a_digest():
    lineage = Lineage(spec())
    lineage.learned("t[0]", 0)
    for position in range(1, 151):
        lineage.skipped("t[0]", position)
    (span,) = lineage.describe("t[0]", events=1)["ranges"]
    assert span["skipped"] == {"count": 150, "sha256": positions_digest(range(1, 151))}
