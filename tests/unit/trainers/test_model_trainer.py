"""ModelTrainer: prequential order, lineage, promotions, adoption and restartable state."""

from __future__ import annotations

import itertools
import pickle

import pytest

from trainers.candidates import Candidate
from trainers.errors import LabelError, SnapshotError
from trainers.serialization import dumps
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

POLICY = {"warmup": 300, "every": 300, "min_samples": 300, "cooldown": 600, "alpha": 0.05}


def sea_spec(champion="steady", drift=None, **policy):
    extra = {} if drift is None else {"drift": drift}
    return ModelSpec.from_dict(
        "sea",
        {
            **extra,
            "task": "classification",
            "window": 300,
            "champion": champion,
            "candidates": [
                {
                    "name": "steady",
                    "river": "StandardScaler | LogisticRegression",
                    "params": {"LogisticRegression": {"optimizer": {"SGD": 0.01}}},
                },
                {
                    "name": "agile",
                    "river": "StandardScaler | LogisticRegression",
                    "params": {"LogisticRegression": {"optimizer": {"SGD": 0.1}}},
                },
                {
                    "name": "hat",
                    "river": "tree.HoeffdingAdaptiveTreeClassifier",
                    "params": {"grace_period": 50, "seed": 7},
                },
                {
                    "name": "sgd",
                    "sklearn": "SGDClassifier",
                    "params": {"loss": "log_loss", "random_state": 0},
                    "batch_size": 50,
                    "classes": [False, True],
                },
            ],
            "policy": {**POLICY, **policy},
        },
    )


def run(trainer, events, start=0):
    """Feed events; return (promotions, predictions of every candidate before each event)."""
    promotions, predictions = [], []
    for position, (x, y) in enumerate(events, start=start):
        predictions.append(tuple(c.predict_one(x) for c in trainer._candidates))
        promotion = trainer.learn(x, y, source="sea", position=position)
        if promotion is not None:
            promotions.append(promotion)
    return promotions, predictions


def summary(promotions):
    return [
        (p.version, p.previous_version, p.kind, p.candidate, p.evidence["window"])
        for p in promotions
    ]


def test_restored_snapshot_continues_identically():
    events = list(drift_stream("sea", n=3000, drift_at=1500, seed=4))
    # A poor first champion, so that a challenger wins; ADWIN watches the champion throughout.
    spec = sea_spec(champion="sgd", drift={"detector": "ADWIN"})
    whole = ModelTrainer(spec)
    promotions, predictions = run(whole, events)

    first = ModelTrainer(spec)
    head_promotions, head_predictions = run(first, events[:1200])
    resumed, changes = ModelTrainer.restore(first.snapshot(), spec)
    assert not changes
    tail_promotions, tail_predictions = run(resumed, events[1200:], start=1200)

    assert head_predictions + tail_predictions == predictions
    assert summary(head_promotions + tail_promotions) == summary(promotions)
    assert [p.evidence for p in head_promotions + tail_promotions] == [
        p.evidence for p in promotions
    ]
    assert resumed.report() == whole.report()
    assert (resumed.latest_version, resumed.champion) == (whole.latest_version, whole.champion)
    assert len(promotions) >= 2  # the run really exercises challenger promotions
    # The detector's state survived the restore: the same drift, at the same event.
    assert first.take_detections() == []
    assert resumed.take_detections() == whole.take_detections() != []


def test_promotions_carry_versions_lineage_and_a_frozen_estimator():
    trainer = ModelTrainer(sea_spec())
    events = list(drift_stream("sea", n=3000, drift_at=1500, seed=4))
    promotions, _ = run(trainer, events, start=100)
    initial = promotions[0]
    assert (initial.model, initial.version, initial.previous_version) == ("sea", 1, None)
    assert (initial.kind, initial.candidate) == ("initial", "steady")
    lineage = initial.lineage
    assert {key: lineage[key] for key in ("source", "first_offset", "last_offset", "events")} == {
        "source": "sea",
        "first_offset": 100,
        "last_offset": 399,
        "events": 300,
    }
    assert initial.candidate_params["name"] == "steady"
    assert isinstance(initial.estimator, Candidate)
    for previous, promotion in itertools.pairwise(promotions):
        assert promotion.version == previous.version + 1
        assert promotion.previous_version == previous.version
        assert promotion.kind == "challenger"
        assert promotion.evidence["champion"] == previous.candidate
        start, end = promotion.evidence["window"]
        assert end == promotion.lineage["events"]
        assert end - start + 1 == promotion.evidence["n"] >= 300
    # The estimator is a copy: it predicts as the candidate did when it was promoted.
    frozen = pickle.loads(dumps(initial.estimator))
    x = events[0][0]
    assert frozen.predict_one(x) == initial.estimator.predict_one(x)
    assert trainer.last_position("sea") == 3099
    assert trainer.last_position("other") is None
    assert trainer.learned == dict.fromkeys(["steady", "agile", "hat", "sgd"], 3000)


def test_best_candidate_is_chosen_when_no_champion_is_configured():
    trainer = ModelTrainer(sea_spec(champion=None))
    promotions, _ = run(trainer, drift_stream("sea", n=300, drift_at=300, seed=1))
    report = trainer.report()["candidates"]
    best = max(report, key=lambda name: report[name]["rolling"]["accuracy"])
    assert [(p.kind, p.candidate) for p in promotions] == [("initial", best)]


def test_lineage_lists_every_source_when_there_are_several():
    trainer = ModelTrainer(sea_spec(warmup=4, every=4))
    events = list(drift_stream("sea", n=4, drift_at=4, seed=1))
    for i, (x, y) in enumerate(events):
        promotion = trainer.learn(x, y, source=f"sea[{i % 2}]", position=10 + i)
    assert promotion.lineage["source"] == "sea[1]"
    assert (promotion.lineage["first_offset"], promotion.lineage["last_offset"]) == (11, 13)
    assert promotion.lineage["sources"] == [
        {"source": "sea[0]", "first_offset": 10, "last_offset": 12},
        {"source": "sea[1]", "first_offset": 11, "last_offset": 13},
    ]
    assert (trainer.last_position("sea[0]"), trainer.last_position("sea[1]")) == (12, 13)


def test_bad_labels_are_refused_before_anyone_learns():
    trainer = ModelTrainer(sea_spec())
    with pytest.raises(LabelError, match="classification labels"):
        trainer.learn({"x0": 1.0}, 1.5, source="sea", position=0)
    with pytest.raises(LabelError, match="not a declared class"):
        trainer.learn({"x0": 1.0}, "maybe", source="sea", position=0)
    assert trainer.events == 0
    assert trainer.last_position("sea") is None
    assert all(score.n == 0 for score in trainer._scores.values())


def test_adopt_switches_champion_and_never_reuses_versions():
    trainer = ModelTrainer(sea_spec())
    run(trainer, drift_stream("sea", n=300, drift_at=300, seed=1))
    trainer.adopt(7, "agile", "operator rollout")
    assert (trainer.champion, trainer.champion_version, trainer.latest_version) == ("agile", 7, 7)
    trainer.adopt(3, "steady", "rollback to v3")
    assert (trainer.champion, trainer.champion_version, trainer.latest_version) == ("steady", 3, 7)
    assert trainer.report()["champion_reason"] == "rollback to v3"


def test_report_names_the_served_version_not_the_counter():
    trainer = ModelTrainer(sea_spec(champion="sgd"))
    promotions, _ = run(trainer, drift_stream("sea", n=3000, drift_at=1500, seed=4))
    assert [(p.version, p.candidate) for p in promotions] == [(1, "sgd"), (2, "steady")]
    report = trainer.report()
    assert (report["version"], report["champion"], report["latest_version"]) == (2, "steady", 2)

    trainer.adopt(1, "sgd", "rollback to v1 by alice")
    report = trainer.report()
    assert (report["version"], report["champion"], report["latest_version"]) == (1, "sgd", 2)
    assert report["champion_reason"] == "rollback to v1 by alice"
    assert report["champion_vacated"] is None and report["quarantined"] == {}


def test_adopting_an_unconfigured_candidate_serves_it_but_leaves_the_title_vacant():
    trainer = ModelTrainer(sea_spec(cooldown=300))
    promotions, _ = run(trainer, drift_stream("sea", n=300, drift_at=300, seed=1))
    assert [p.version for p in promotions] == [1]
    trainer.adopt(4, "retired", "rollback to v4 by alice")
    report = trainer.report()
    assert (report["version"], report["champion"], report["latest_version"]) == (4, "retired", 4)
    assert trainer.champion is None
    assert "'retired' is not a configured candidate" in report["champion_vacated"]
    later, _ = run(trainer, drift_stream("sea", n=600, drift_at=600, seed=2), start=300)
    # Not before the cooldown restarted by the operator's adoption has passed.
    assert [(p.version, p.previous_version, p.kind) for p in later][:1] == [(5, 4, "initial")]
    assert later[0].evidence["window"][1] == 600
    assert later[0].reason.startswith("adopted champion 'retired' is not a configured candidate")
    assert trainer.champion == later[0].candidate


def test_regression_trainer():
    spec = ModelSpec.from_dict(
        "reg",
        {
            "task": "regression",
            "window": 100,
            "candidates": [
                {"name": "lin", "river": "StandardScaler | LinearRegression"},
                {
                    "name": "sgd",
                    "sklearn": "SGDRegressor",
                    "params": {"random_state": 0},
                    "batch_size": 20,
                },
            ],
            "policy": {
                "warmup": 100,
                "every": 100,
                "min_samples": 100,
                "cooldown": 0,
                "loss_scale": 10.0,
            },
        },
    )
    trainer = ModelTrainer(spec)
    promotions = []
    for i in range(400):
        x = {"a": float(i % 10), "b": float(i % 3)}
        promotion = trainer.learn(x, 2 * x["a"] - x["b"] + 1, source="r", position=i)
        if promotion:
            promotions.append(promotion)
    assert promotions[0].kind == "initial"
    report = trainer.report()["candidates"]
    assert report["sgd"]["cumulative"]["missing"] == 20  # nothing to predict with before a batch
    assert report["lin"]["rolling"]["mae"] < 1.0
    with pytest.raises(LabelError, match="regression labels"):
        trainer.learn({"a": 1.0}, True, source="r", position=400)


def test_restore_refuses_other_objects_and_old_formats():
    with pytest.raises(SnapshotError, match="not a ModelTrainer"):
        ModelTrainer.restore(dumps({"not": "a trainer"}), sea_spec())
    old = ModelTrainer(sea_spec())
    del old._format  # as pickled before snapshots had a format
    with pytest.raises(SnapshotError, match="has format 1"):
        ModelTrainer.restore(old.snapshot(), sea_spec())


def test_challengers_go_on_competing_against_an_adopted_champion():
    spec = ModelSpec.from_dict(
        "sea",
        {
            "task": "classification",
            "window": 300,
            "champion": "weak",
            "candidates": [
                {"name": "steady", "river": "StandardScaler | LogisticRegression"},
                {
                    "name": "weak",
                    "river": "LogisticRegression",
                    "params": {"optimizer": {"SGD": 0.00001}},
                },
            ],
            "policy": POLICY,
        },
    )
    trainer = ModelTrainer(spec)
    events = iter(drift_stream("sea", n=6000, drift_at=6000, seed=3))
    promotions, _ = run(trainer, itertools.islice(events, 3000))
    assert [(p.version, p.candidate) for p in promotions] == [(1, "weak"), (2, "steady")]

    trainer.adopt(1, "weak", "rollback to v1")
    report = trainer.report()
    assert (report["version"], report["champion"], report["latest_version"]) == (1, "weak", 2)
    later, _ = run(trainer, events, start=3000)
    assert [(p.version, p.candidate, p.previous_version) for p in later][:1] == [(3, "steady", 1)]
    assert later[0].evidence["window"][0] > 3000
