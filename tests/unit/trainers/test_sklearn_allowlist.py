"""Every scikit-learn estimator on the allowlist learns from the hashed vectors it is given.

Each one runs a few hundred events of two kinds of streams: dense (every event has the same
numeric features) and sparse-prone (events carry a varying handful of features, with strings,
booleans, integers and missing values), on its own and as a candidate of a trainer.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from trainers.candidates import SKLEARN_ESTIMATORS, SklearnCandidate, build_candidate
from trainers.errors import ConfigError
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

EVENTS = 400
# Deprecated by scikit-learn 1.8; allowed while the pinned 1.9 still has them.
pytestmark = pytest.mark.filterwarnings("ignore:Class PassiveAggressive:FutureWarning")


def dense(task: str) -> Iterator[tuple[dict, object]]:
    for x, y in drift_stream("sea", n=EVENTS, drift_at=EVENTS // 2, seed=5):
        yield x, y if task == "classification" else x["x0"] + x["x1"]


def sparse_prone(task: str, *, negative: bool = True) -> Iterator[tuple[dict, object]]:
    rng = random.Random(7)
    low = -5.0 if negative else 0.0
    for _ in range(EVENTS):
        x = {}
        for key in rng.sample(range(60), rng.randint(0, 5)):
            x[f"f{key}"] = rng.choice(
                [rng.uniform(low, 5.0), "red", "blue", None, True, False, rng.randint(0, 9)]
            )
        signal = sum(1 for value in x.values() if value == "red")
        yield x, (signal > 0 if task == "classification" else signal + rng.uniform(-0.1, 0.1))


def spec_of(name: str) -> dict:
    _, task = SKLEARN_ESTIMATORS[name]
    spec = {"name": "c", "sklearn": name, "batch_size": 25, "n_features": 64}
    if task == "classification":
        spec["classes"] = [False, True]
    return spec


def streams_of(name: str) -> list:
    # Naive Bayes on counts takes no negative values: its sparse stream has none.
    return [dense, lambda task: sparse_prone(task, negative=name != "MultinomialNB")]


@pytest.mark.parametrize("name", sorted(SKLEARN_ESTIMATORS))
@pytest.mark.parametrize("stream", [0, 1], ids=["dense", "sparse"])
def test_every_allowed_estimator_learns_and_predicts(name, stream):
    _, task = SKLEARN_ESTIMATORS[name]
    candidate = build_candidate(spec_of(name), task)
    assert isinstance(candidate, SklearnCandidate)
    predictions = []
    for x, y in streams_of(name)[stream](task):
        prediction, proba = candidate.predict_with_proba(x)
        predictions.append(prediction)
        if proba is not None:
            assert sum(proba.values()) == pytest.approx(1.0)
        candidate.learn_one(x, y)
    assert candidate.n_fitted == EVENTS
    assert predictions[:25] == [None] * 25  # nothing to predict with before the first batch
    if task == "classification":
        assert set(predictions[25:]) <= {False, True}
    else:
        assert all(isinstance(p, float) for p in predictions[25:])


@pytest.mark.parametrize("name", sorted(SKLEARN_ESTIMATORS))
@pytest.mark.parametrize("stream", [0, 1], ids=["dense", "sparse"])
def test_every_allowed_estimator_trains_in_a_trainer_without_quarantine(name, stream):
    _, task = SKLEARN_ESTIMATORS[name]
    other = {**spec_of("SGDClassifier" if task == "classification" else "SGDRegressor")}
    other.update(name="other", batch_size=10)
    spec = ModelSpec.from_dict(
        "m",
        {
            "task": task,
            "window": 100,
            "candidates": [spec_of(name), other],
            "policy": {"warmup": 100, "every": 100, "min_samples": 100, "cooldown": 0}
            | ({"loss_scale": 10.0} if task == "regression" else {}),
        },
    )
    trainer = ModelTrainer(spec)
    for position, (x, y) in enumerate(streams_of(name)[stream](task)):
        trainer.learn(x, y, source="s", position=position)
    assert trainer.quarantined == {}
    assert trainer.learned == {"c": EVENTS, "other": EVENTS}
    assert trainer.champion in ("c", "other")


def test_gaussian_nb_is_not_allowed():
    # Its partial_fit refuses the sparse hashed vectors: it failed on its first mini-batch.
    with pytest.raises(ConfigError, match="'GaussianNB' is not allowed"):
        build_candidate(
            {"name": "nb", "sklearn": "GaussianNB", "classes": [False, True]}, "classification"
        )


def test_a_failed_batch_is_discarded_and_does_not_poison_later_ones():
    nb = build_candidate(
        {"name": "nb", "sklearn": "MultinomialNB", "batch_size": 2, "classes": [0, 1]},
        "classification",
    )
    nb.learn_one({"a": 1.0}, 0)
    with pytest.raises(ValueError, match="Negative values"):
        nb.learn_one({"a": -1.0}, 1)
    assert (nb.n_pending, nb.n_fitted) == (0, 0)
    nb.learn_one({"a": 2.0}, 0)
    nb.learn_one({"b": 3.0}, 1)
    assert (nb.n_pending, nb.n_fitted) == (0, 2)
    assert nb.predict_one({"b": 3.0}) == 1
