"""Drift streams are deterministic and switch concept where asked."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from trainers.synthetic import KINDS, TASK_OF_KIND, drift_stream


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("width", [1, 200])
def test_deterministic_with_string_features(kind, width):
    noise = 0.1 if TASK_OF_KIND[kind] == "classification" else 0.0
    first = list(drift_stream(kind, n=600, drift_at=300, width=width, seed=5, noise=noise))
    again = list(drift_stream(kind, n=600, drift_at=300, width=width, seed=5, noise=noise))
    assert first == again
    assert len(first) == 600
    assert all(isinstance(name, str) for x, _ in first for name in x)
    other = list(drift_stream(kind, n=600, drift_at=300, width=width, seed=6, noise=noise))
    assert first != other


def friedman_one(x):
    return (
        10 * math.sin(math.pi * x["x0"] * x["x1"])
        + 20 * (x["x2"] - 0.5) ** 2
        + 10 * x["x3"]
        + 5 * x["x4"]
    )


def test_friedman_abrupt_switch_moves_the_relevant_features():
    events = list(drift_stream("friedman", n=2000, drift_at=1000, seed=3))
    before, after = events[:1000], events[1000:]
    # Friedman #1 plus N(0, 1) noise before; after, the same function of the features moved
    # around (river's "global recurring abrupt" drift, of which this is the first switch).
    moved = [
        ({"x0": x["x3"], "x1": x["x5"], "x2": x["x1"], "x3": x["x0"], "x4": x["x2"]}, y)
        for x, y in after
    ]
    assert statistics.fmean(abs(y - friedman_one(x)) for x, y in before) < 1.0
    assert statistics.fmean(abs(y - friedman_one(x)) for x, y in moved) < 1.0
    assert statistics.fmean(abs(y - friedman_one(x)) for x, y in after) > 3.0
    assert all(isinstance(y, float) for _, y in events)


def test_regression_streams_refuse_label_noise():
    with pytest.raises(ValueError, match="regression stream"):
        next(drift_stream("friedman", 10, 5, noise=0.1))


def test_sea_abrupt_switch_changes_the_labelling_rule():
    events = list(drift_stream("sea", n=4000, drift_at=2000, seed=1))
    before, after = events[:2000], events[2000:]
    assert all(y == (x["x0"] + x["x1"] > 8) for x, y in before)
    assert all(y == (x["x0"] + x["x1"] > 9.5) for x, y in after)


def test_noise_flips_about_that_share_of_labels():
    clean = drift_stream("sea", n=5000, drift_at=5000, seed=2)
    noisy = drift_stream("sea", n=5000, drift_at=5000, seed=2, noise=0.2)
    flipped = sum(a[1] != b[1] for a, b in zip(clean, noisy, strict=True))
    assert 900 < flipped < 1100


def test_stream_is_lazy_and_bad_arguments_are_refused():
    assert len(list(itertools.islice(drift_stream("agrawal", 10**9, 10, seed=0), 3))) == 3
    with pytest.raises(ValueError, match="kind must be one of"):
        next(drift_stream("stagger", 10, 5))
    with pytest.raises(ValueError, match="width >= 1"):
        next(drift_stream("sea", 10, 5, width=0))
