"""Prequential scores agree with scikit-learn's metrics, cumulatively and over windows."""

from __future__ import annotations

import math
import random

import pytest
from sklearn import metrics as sk

from trainers.metrics import PrequentialScore, f1_score


def random_classification(n, labels, seed=0):
    rng = random.Random(seed)
    return [(rng.choice(labels), rng.choice(labels)) for _ in range(n)]


def test_binary_metrics_match_sklearn_cumulative_and_rolling():
    pairs = random_classification(500, [False, True])
    score = PrequentialScore("classification", window=100, history=300)
    for y_true, y_pred in pairs:
        score.update(y_true, y_pred, {y_pred: 0.7, not y_pred: 0.3})
    truth, preds = zip(*pairs, strict=True)
    cumulative = score.cumulative()
    assert cumulative["accuracy"] == pytest.approx(sk.accuracy_score(truth, preds))
    assert cumulative["f1"] == pytest.approx(sk.f1_score(truth, preds))
    expected_log_loss = sum(-math.log(0.7 if t == p else 0.3) for t, p in pairs) / len(pairs)
    assert cumulative["log_loss"] == pytest.approx(expected_log_loss)
    rolling = score.rolling()
    assert rolling["n"] == 100
    assert rolling["accuracy"] == pytest.approx(sk.accuracy_score(truth[-100:], preds[-100:]))
    assert rolling["f1"] == pytest.approx(sk.f1_score(truth[-100:], preds[-100:]))
    assert score.recent(300)["f1"] == pytest.approx(sk.f1_score(truth[-300:], preds[-300:]))
    assert score.losses(5) == [int(t != p) for t, p in pairs[-5:]]


def test_multiclass_f1_is_macro_over_seen_classes():
    pairs = random_classification(400, ["a", "b", "c"], seed=1)
    score = PrequentialScore("classification", window=400)
    for y_true, y_pred in pairs:
        score.update(y_true, y_pred)
    truth, preds = zip(*pairs, strict=True)
    assert score.cumulative()["f1"] == pytest.approx(sk.f1_score(truth, preds, average="macro"))
    assert score.cumulative()["log_loss"] is None
    assert score.cumulative()["missing_proba"] == 400


def test_binary_string_labels_take_the_second_seen_as_positive():
    assert f1_score({("no", "no"): 5, ("yes", "no"): 2, ("yes", "yes"): 2}, ["no", "yes"]) == (
        pytest.approx(
            sk.f1_score(["no"] * 5 + ["yes"] * 4, ["no"] * 7 + ["yes"] * 2, pos_label="yes")
        )
    )


def test_missing_prediction_is_an_error_and_a_false_negative():
    score = PrequentialScore("classification", window=10)
    score.update(True, None)
    score.update(True, True)
    summary = score.cumulative()
    assert summary["accuracy"] == 0.5
    assert summary["f1"] == pytest.approx(2 / 3)
    assert summary["missing"] == 1
    assert score.losses(2) == [1, 0]


def test_regression_metrics_skip_missing_predictions():
    score = PrequentialScore("regression", window=2, history=3)
    for y_true, y_pred in [(0.0, None), (1.0, 3.0), (2.0, 1.0), (5.0, 5.0)]:
        score.update(y_true, y_pred)
    assert score.cumulative() == {"n": 4, "missing": 1, "mae": 1.0, "rmse": math.sqrt(5 / 3)}
    assert score.rolling() == {"n": 2, "missing": 0, "mae": 0.5, "rmse": math.sqrt(0.5)}
    assert score.losses(3) == [2.0, 1.0, 0.0]
    assert score.losses(10) == [2.0, 1.0, 0.0]  # only `history` events are kept


def test_window_must_fit_in_history():
    with pytest.raises(ValueError, match="window <= history"):
        PrequentialScore("classification", window=10, history=5)
