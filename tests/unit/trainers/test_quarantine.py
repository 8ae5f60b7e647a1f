"""A candidate that raises on an event is quarantined; the others and the counters go on."""

from __future__ import annotations

import pytest

from trainers.errors import LabelError
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

POLICY = {"warmup": 100, "every": 100, "min_samples": 100, "cooldown": 200, "alpha": 0.05}
LR = {"river": "StandardScaler | LogisticRegression"}
SGD = {"sklearn": "SGDClassifier", "params": {"random_state": 0}, "classes": [False, True]}
# A string where river's scaler expects a number: river candidates raise, sklearn hashes it.
STRING = {"x0": "oops", "x1": 1.0, "x2": 2.0}


def spec(*candidates, champion=None, **policy):
    return ModelSpec.from_dict(
        "sea",
        {
            "task": "classification",
            "window": 100,
            "champion": champion,
            "candidates": list(candidates),
            "policy": {**POLICY, **policy},
        },
    )


def feed(trainer, n, start=0, seed=1):
    promotions = []
    for position, (x, y) in enumerate(drift_stream("sea", n=n, drift_at=n, seed=seed), start):
        if (promotion := trainer.learn(x, y, source="s", position=position)) is not None:
            promotions.append(promotion)
    return promotions


def explode(x, y):
    raise RuntimeError("disk full")


def test_a_candidate_raising_while_predicting_is_quarantined_and_the_others_learn_the_event():
    trainer = ModelTrainer(
        spec({"name": "first", **SGD}, {"name": "lr", **LR}, {"name": "last", **SGD})
    )
    feed(trainer, 50)
    assert trainer.learn(STRING, True, source="s", position=50) is None
    assert trainer.events == 51
    assert trainer.learned == {"first": 51, "lr": 50, "last": 51}
    assert list(trainer.quarantined) == ["lr"]
    assert trainer.quarantined["lr"].startswith(
        "TypeError while predicting event 51 (source 's', position 50): "
    )
    assert trainer.report()["quarantined"] == trainer.quarantined
    feed(trainer, 100, start=51)
    assert trainer.learned == {"first": 151, "lr": 50, "last": 151}
    assert trainer.candidate("lr").n_learned == 50  # it stopped learning


def test_a_candidate_raising_while_learning_is_not_scored_on_that_event(monkeypatch):
    trainer = ModelTrainer(
        spec({"name": "first", **LR}, {"name": "middle", **LR}, {"name": "last", **LR})
    )
    feed(trainer, 30)
    monkeypatch.setattr(trainer.candidate("middle"), "learn_one", explode)
    x, y = next(iter(drift_stream("sea", n=1, drift_at=1, seed=9)))
    trainer.learn(x, y, source="s", position=30)
    # Candidates before and after it learned the event, once; its counters did not move.
    assert trainer.learned == {"first": 31, "middle": 30, "last": 31}
    assert trainer.candidate("first").n_learned == trainer.candidate("last").n_learned == 31
    report = trainer.report()["candidates"]
    assert report["middle"]["cumulative"]["n"] == 30
    assert "RuntimeError while learning event 31" in trainer.quarantined["middle"]


def test_quarantined_candidates_stop_competing(monkeypatch):
    weak = {"name": "weak", "river": "LogisticRegression", "params": {"optimizer": {"SGD": 1e-5}}}
    trainer = ModelTrainer(spec(weak, {"name": "strong", **LR}, cooldown=0))
    monkeypatch.setattr(trainer.candidate("strong"), "learn_one", explode)
    promotions = feed(trainer, 600)
    assert [(p.version, p.kind, p.candidate) for p in promotions] == [(1, "initial", "weak")]
    assert list(trainer.quarantined) == ["strong"]


def test_a_model_whose_candidates_are_all_quarantined_takes_events_and_promotes_nothing():
    trainer = ModelTrainer(
        spec({"name": "lr", **LR}, {"name": "hat", "river": "tree.HoeffdingTreeClassifier"})
    )
    feed(trainer, 10)
    assert trainer.learn(STRING, True, source="s", position=10) is None
    assert set(trainer.quarantined) == {"lr", "hat"}
    assert feed(trainer, 500, start=11) == []
    assert trainer.events == 511 and trainer.champion is None
    assert trainer.learned == {"lr": 10, "hat": 10}


def test_a_quarantined_champion_keeps_serving_until_the_policy_replaces_it(monkeypatch):
    trainer = ModelTrainer(
        spec({"name": "steady", **LR}, {"name": "agile", **LR}, champion="steady")
    )
    [initial] = feed(trainer, 150)
    assert (initial.version, initial.candidate) == (1, "steady")
    monkeypatch.setattr(trainer.candidate("steady"), "learn_one", explode)
    feed(trainer, 1, start=150, seed=2)
    report = trainer.report()
    # Its promoted copy still serves; the title is vacant.
    assert (report["version"], report["champion"], trainer.champion) == (1, "steady", None)
    assert report["champion_vacated"] == "champion 'steady' was quarantined at event 151"
    # The cooldown after the promotion at event 100 runs to event 300: no promotion at 200.
    [replacement] = feed(trainer, 200, start=151, seed=3)
    assert replacement.evidence["window"][1] == 300
    assert (replacement.version, replacement.previous_version) == (2, 1)
    assert (replacement.kind, replacement.candidate) == ("initial", "agile")
    assert replacement.reason.startswith("champion 'steady' was quarantined at event 151; ")
    report = trainer.report()
    assert (report["version"], report["champion"], report["champion_vacated"]) == (2, "agile", None)


def test_a_failed_sklearn_batch_quarantines_the_candidate_and_is_dropped():
    trainer = ModelTrainer(
        spec(
            {"name": "nb", "sklearn": "MultinomialNB", "batch_size": 10, "classes": [False, True]},
            {"name": "lr", **LR},
        )
    )
    feed(trainer, 5)
    for position in range(5, 10):
        trainer.learn({"x0": -1.0, "x1": 1.0, "x2": 1.0}, True, source="s", position=position)
    assert "ValueError while learning event 10" in trainer.quarantined["nb"]
    assert trainer.candidate("nb").n_pending == 0
    assert trainer.learned == {"nb": 9, "lr": 10}
    feed(trainer, 20, start=10)
    assert trainer.learned == {"nb": 9, "lr": 30}


def test_labels_are_checked_against_live_candidates_only(monkeypatch):
    nb = {"name": "nb", "river": "naive_bayes.GaussianNB"}
    trainer = ModelTrainer(spec({"name": "sgd", **SGD, "batch_size": 5}, nb))
    with pytest.raises(LabelError, match="not a declared class"):
        trainer.learn({"x0": 1.0}, "maybe", source="s", position=0)
    monkeypatch.setattr(trainer.candidate("sgd"), "learn_one", explode)
    trainer.learn({"x0": 1.0}, True, source="s", position=1)
    assert list(trainer.quarantined) == ["sgd"]
    # The only candidate that declared its classes is out: its classes no longer bind.
    trainer.learn({"x0": 1.0}, "maybe", source="s", position=2)
    assert trainer.learned == {"sgd": 0, "nb": 2}


def test_quarantine_survives_a_snapshot():
    trainer = ModelTrainer(spec({"name": "sgd", **SGD}, {"name": "lr", **LR}))
    feed(trainer, 20)
    trainer.learn(STRING, True, source="s", position=20)
    restored, changes = ModelTrainer.restore(trainer.snapshot(), trainer.spec)
    assert not changes
    assert restored.quarantined == trainer.quarantined
    feed(restored, 10, start=21)
    assert restored.learned == {"sgd": 31, "lr": 20}
