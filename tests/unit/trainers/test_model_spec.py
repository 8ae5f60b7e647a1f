"""Model specifications and label checks."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from trainers.errors import ConfigError
from trainers.spec import ModelSpec, check_label

NB = {"name": "nb", "river": "naive_bayes.GaussianNB"}
EXAMPLE = Path(__file__).parents[3] / "examples" / "sea.toml"


def test_example_config_is_valid():
    config = tomllib.loads(EXAMPLE.read_text())
    spec = ModelSpec.from_dict("sea", config["models"]["sea"])
    assert spec.champion == "steady"
    assert [c["name"] for c in spec.candidates] == ["steady", "agile"]
    assert spec.policy.warmup == 1000


def test_defaults():
    spec = ModelSpec.from_dict(
        "m",
        {
            "task": "regression",
            "candidates": [{"name": "lr", "river": "linear_model.LinearRegression"}],
        },
    )
    assert (spec.window, spec.champion, spec.policy.metric) == (1000, None, "mae")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"candidates": [NB]}, "model 'm': task: must be one of"),
        ({"task": "classification"}, "model 'm': candidates: give at least one"),
        ({"task": "classification", "candidates": [NB, NB]}, "names must be unique"),
        (
            {"task": "classification", "candidates": [NB], "champion": "x"},
            "champion: 'x' is not a candidate",
        ),
        ({"task": "classification", "candidates": [NB], "window": 0}, "window: must be"),
        ({"task": "classification", "candidates": [NB], "colour": "red"}, "unknown fields"),
        (
            {"task": "classification", "candidates": [NB], "policy": {"metric": "mae"}},
            "model 'm': policy.metric",
        ),
        (
            {"task": "regression", "candidates": [NB]},
            r"model 'm': candidates\[0\]: candidate 'nb': GaussianNB is not a regressor",
        ),
        ({"task": "classification", "candidates": ["nb"]}, r"candidates\[0\]: must be a table"),
    ],
)
def test_invalid_tables_name_model_and_field(table, message):
    with pytest.raises(ConfigError, match=message):
        ModelSpec.from_dict("m", table)


@pytest.mark.parametrize("label", ["spam", 3, True, False, 0])
def test_classification_labels(label):
    assert check_label("classification", label) is None


@pytest.mark.parametrize("label", [1.5, None, [1], b"x"])
def test_bad_classification_labels(label):
    assert "classification labels" in check_label("classification", label)


@pytest.mark.parametrize("label", [1, -2.5, 0.0])
def test_regression_labels(label):
    assert check_label("regression", label) is None


@pytest.mark.parametrize("label", [True, "1.0", None, math.inf, math.nan])
def test_bad_regression_labels(label):
    assert "regression labels" in check_label("regression", label)
