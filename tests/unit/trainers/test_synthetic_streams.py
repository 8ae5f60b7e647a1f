"""Drift streams are deterministic and switch concept where asked."""

from __future__ import annotations

import itertools

import pytest

from trainers.synthetic import KINDS, drift_stream


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("width", [1, 200])
def test_deterministic_with_string_features(kind, width):
    first = list(drift_stream(kind, n=600, drift_at=300, width=width, seed=5, noise=0.1))
    again = list(drift_stream(kind, n=600, drift_at=300, width=width, seed=5, noise=0.1))
    assert first == again
    assert len(first) == 600
    assert all(isinstance(name, str) for x, _ in first for name in x)
    other = list(drift_stream(kind, n=600, drift_at=300, width=width, seed=6, noise=0.1))
    assert first != other


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
