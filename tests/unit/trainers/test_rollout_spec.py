"""The rollout, label horizon, join and refresh fields of a model's specification."""

from __future__ import annotations

import pytest

from trainers.errors import ConfigError
from trainers.spec import ModelSpec, RolloutSpec, parse_duration

NB = {"name": "nb", "river": "naive_bayes.GaussianNB"}
LR = {"name": "lr", "river": "linear_model.LinearRegression"}


def classification(**fields):
    return ModelSpec.from_dict("m", {"task": "classification", "candidates": [NB], **fields})


def regression(**fields):
    return ModelSpec.from_dict("m", {"task": "regression", "candidates": [LR], **fields})


def test_defaults():
    spec = classification()
    assert spec.rollout == RolloutSpec("direct", 0.1, 1000, 0.02, 0.05, None)
    assert spec.rollout.trial_kind is None
    assert (spec.label_horizon, spec.join, spec.refresh_every) == (7 * 86400, True, 0)


def test_a_full_table():
    spec = regression(
        rollout={
            "strategy": "canary",
            "fraction": 0.25,
            "min_outcomes": 200,
            "tolerance": 0,
            "alpha": 0.1,
            "loss_scale": 5,
        },
        label_horizon="2h",
        join=False,
        refresh_every=10_000,
    )
    assert spec.rollout == RolloutSpec("canary", 0.25, 200, 0.0, 0.1, 5.0)
    assert (spec.rollout.trial_kind, spec.rollout.trial_fraction) == ("canary", 0.25)
    assert (spec.label_horizon, spec.join, spec.refresh_every) == (7200, False, 10_000)
    shadow = classification(rollout={"strategy": "shadow"}).rollout
    assert (shadow.trial_kind, shadow.trial_fraction) == ("shadow", 1.0)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("1.5m", 90), ("2h", 7200), ("7d", 604800), ("0.5d", 43200)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rollout": {"strategy": "blue-green"}}, "rollout.strategy must be one of"),
        ({"rollout": "canary"}, "rollout: must be a table"),
        (
            {"rollout": {"strategy": "canary", "share": 0.1}},
            r"rollout: unknown settings \['share'\]",
        ),
        ({"rollout": {"fraction": 0}}, r"rollout.fraction must be a number in \(0, 1\), got 0"),
        ({"rollout": {"fraction": 1.0}}, "rollout.fraction must be"),
        ({"rollout": {"fraction": True}}, "rollout.fraction must be"),
        ({"rollout": {"min_outcomes": 0}}, "rollout.min_outcomes must be a positive integer"),
        ({"rollout": {"min_outcomes": 10.0}}, "rollout.min_outcomes must be"),
        ({"rollout": {"tolerance": 1}}, r"rollout.tolerance must be a number in \[0, 1\)"),
        ({"rollout": {"alpha": 0}}, r"rollout.alpha must be a number in \(0, 1\)"),
        ({"rollout": {"loss_scale": 2.0}}, "rollout.loss_scale is for regression models only"),
        ({"label_horizon": "7 days"}, "label_horizon: must be a duration such as '7d'"),
        ({"label_horizon": 3600}, "label_horizon: must be a duration"),
        ({"label_horizon": "0s"}, "label_horizon: must be a duration"),
        ({"label_horizon": "5w"}, "label_horizon: must be a duration"),
        ({"join": "yes"}, "join: must be true or false, got 'yes'"),
        ({"refresh_every": -1}, "refresh_every: must be a non-negative integer"),
        ({"refresh_every": True}, "refresh_every: must be a non-negative integer"),
        ({"refresh_every": 1.5}, "refresh_every: must be a non-negative integer"),
    ],
)
def test_classification_mistakes_name_model_and_field(fields, message):
    with pytest.raises(ConfigError, match=f"^model 'm': {message}") as caught:
        classification(**fields)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ({"strategy": "canary"}, "rollout.loss_scale is required for regression under the canary"),
        ({"strategy": "shadow"}, "rollout.loss_scale is required for regression under the shadow"),
        ({"strategy": "canary", "loss_scale": 0}, "rollout.loss_scale must be a positive number"),
        ({"strategy": "canary", "loss_scale": float("inf")}, "rollout.loss_scale must be"),
    ],
)
def test_regression_trials_need_a_loss_scale(rollout, message):
    with pytest.raises(ConfigError, match=f"^model 'm': {message}"):
        regression(rollout=rollout)
    assert regression(rollout={"strategy": "direct"}).rollout.loss_scale is None
