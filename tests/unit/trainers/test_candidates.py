"""Candidate backends and `build_candidate` validation."""

from __future__ import annotations

import pickle

import pytest

from trainers.candidates import RiverCandidate, SklearnCandidate, build_candidate
from trainers.errors import ConfigError, LabelError
from trainers.synthetic import drift_stream


def feed(candidate, n=600, seed=3):
    for x, y in drift_stream("sea", n=n, drift_at=n, seed=seed):
        candidate.learn_one(x, y)


def test_river_single_estimator_with_flat_params():
    hat = build_candidate(
        {
            "name": "hat",
            "river": "tree.HoeffdingAdaptiveTreeClassifier",
            "params": {"grace_period": 50, "seed": 1},
        },
        "classification",
    )
    assert isinstance(hat, RiverCandidate)
    assert hat.model.grace_period == 50
    assert hat.predict_one({"x0": 1.0}) is None
    feed(hat)
    assert hat.predict_one({"x0": 1.0, "x1": 1.0, "x2": 1.0}) in (True, False)


def test_river_pipeline_with_bare_names_and_optimizer():
    lr = build_candidate(
        {
            "name": "lr",
            "river": "StandardScaler | linear_model.LogisticRegression",
            "params": {"LogisticRegression": {"l2": 0.001, "optimizer": {"SGD": 0.05}}},
        },
        "classification",
    )
    final = lr.model["LogisticRegression"]
    assert final.l2 == 0.001
    assert final.optimizer.learning_rate == 0.05
    feed(lr)
    label, proba = lr.predict_with_proba({"x0": 9.0, "x1": 9.0, "x2": 5.0})
    assert label is True
    assert proba is not None and label == max(proba, key=proba.get)


def test_predict_with_proba_agrees_with_predict_one():
    hat = build_candidate(
        {"name": "hat", "river": "tree.HoeffdingAdaptiveTreeClassifier", "params": {"seed": 1}},
        "classification",
    )
    feed(hat)
    for x, _ in drift_stream("sea", n=50, drift_at=50, seed=9):
        assert hat.predict_with_proba(x) == (hat.predict_one(x), hat.predict_proba_one(x))


def test_regressor_has_no_probabilities():
    reg = build_candidate({"name": "r", "river": "linear_model.LinearRegression"}, "regression")
    reg.learn_one({"a": 1.0}, 2.0)
    assert isinstance(reg.predict_one({"a": 1.0}), float)
    assert reg.predict_proba_one({"a": 1.0}) is None


def test_sklearn_classifier_batches_and_hashes_strings_and_none():
    sgd = build_candidate(
        {
            "name": "sgd",
            "sklearn": "SGDClassifier",
            "params": {"loss": "log_loss", "random_state": 0},
            "batch_size": 10,
            "n_features": 16,
            "classes": ["ham", "spam"],
        },
        "classification",
    )
    assert isinstance(sgd, SklearnCandidate)
    for i in range(9):
        sgd.learn_one({"word": "win" if i % 2 else "hello", "n": None}, "spam" if i % 2 else "ham")
    assert sgd.predict_one({"word": "win"}) is None
    sgd.learn_one({"word": "hello"}, "ham")
    assert sgd.n_fitted == 10
    assert sgd.predict_one({"word": "win"}) in ("ham", "spam")
    proba = sgd.predict_proba_one({"word": "win"})
    assert set(proba) == {"ham", "spam"}
    assert sum(proba.values()) == pytest.approx(1.0)


def test_sklearn_classifier_refuses_undeclared_label():
    sgd = build_candidate(
        {"name": "sgd", "sklearn": "Perceptron", "classes": [0, 1]}, "classification"
    )
    with pytest.raises(LabelError, match="declared classes"):
        sgd.learn_one({"a": 1}, 2)
    assert sgd.predict_proba_one({"a": 1}) is None  # Perceptron has no probabilities


def test_candidates_pickle_round_trip_and_keep_predicting_identically():
    sgd = build_candidate(
        {
            "name": "sgd",
            "sklearn": "SGDClassifier",
            "params": {"random_state": 0},
            "batch_size": 50,
            "classes": [False, True],
        },
        "classification",
    )
    feed(sgd, n=275)
    clone = pickle.loads(pickle.dumps(sgd))
    more = list(drift_stream("sea", n=200, drift_at=200, seed=11))
    for x, y in more:
        assert clone.predict_one(x) == sgd.predict_one(x)
        sgd.learn_one(x, y)
        clone.learn_one(x, y)


def test_candidate_keeps_its_own_copy_of_the_spec():
    spec = {"name": "nb", "river": "naive_bayes.GaussianNB", "params": {}}
    candidate = build_candidate(spec, "classification")
    spec["params"]["oops"] = 1
    assert candidate.params == {"name": "nb", "river": "naive_bayes.GaussianNB", "params": {}}


@pytest.mark.parametrize(
    ("spec", "task", "message"),
    [
        ({"name": "x", "river": "tree.Nope"}, "classification", "tree has no estimator 'Nope'"),
        ({"name": "x", "river": "Nope"}, "classification", "no estimator 'Nope' in river modules"),
        ({"name": "x", "river": "drift.ADWIN"}, "classification", "module 'drift' is not allowed"),
        ({"name": "x", "river": "__import__('os')"}, "classification", "no estimator"),
        (
            {"name": "x", "river": "tree.HoeffdingTreeRegressor"},
            "classification",
            "is not a classifier",
        ),
        (
            {"name": "x", "river": "LogisticRegression | StandardScaler"},
            "classification",
            "not a transformer",
        ),
        (
            {"name": "x", "river": "tree.HoeffdingTreeClassifier", "params": {"nope": 1}},
            "classification",
            "allowed: .*grace_period",
        ),
        (
            {"name": "x", "river": "StandardScaler | LogisticRegression", "params": {"l2": 1}},
            "classification",
            "keyed by step class",
        ),
        (
            {"name": "x", "river": "naive_bayes.GaussianNB", "params": {"a": float("nan")}},
            "classification",
            "not a finite JSON scalar",
        ),
        ({"name": "x", "sklearn": "SVC"}, "classification", "allowed: .*SGDClassifier"),
        ({"name": "x", "sklearn": "SGDRegressor"}, "classification", "is for regression"),
        ({"name": "x", "sklearn": "SGDClassifier"}, "classification", "need 'classes'"),
        (
            {"name": "x", "sklearn": "SGDClassifier", "classes": [0, 1], "batch_size": 0},
            "classification",
            "'batch_size' must be a positive integer",
        ),
        (
            {"name": "x", "sklearn": "SGDRegressor", "params": {"alpha": "high"}},
            "regression",
            "bad params for SGDRegressor",
        ),
        (
            {"name": "x", "sklearn": "SGDRegressor", "params": {"nope": 1}},
            "regression",
            "allowed: .*alpha",
        ),
        ({"name": "x"}, "classification", "exactly one of 'river', 'sklearn' or 'sklearn_window'"),
        (
            {"name": "x", "river": "naive_bayes.GaussianNB", "extra": 1},
            "classification",
            "unknown keys",
        ),
        ({"river": "naive_bayes.GaussianNB"}, "classification", "'name' must be"),
        ({"name": "x", "river": "naive_bayes.GaussianNB"}, "ranking", "task must be one of"),
    ],
)
def test_invalid_specs_raise_config_error(spec, task, message):
    with pytest.raises(ConfigError, match=message):
        build_candidate(spec, task)
