"""Paired tests: McNemar (exact and chi-square) and Wilcoxon."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from trainers.significance import EXACT_BELOW, mcnemar, wilcoxon


def test_mcnemar_exact_matches_binomial_test():
    a = [1] * 10 + [0] * 2 + [0] * 50
    b = [0] * 10 + [1] * 2 + [0] * 50
    result = mcnemar(a, b)
    assert (result.b, result.c, result.n) == (10, 2, 62)
    assert result.p_value == pytest.approx(stats.binomtest(2, 12, 0.5).pvalue)


def test_mcnemar_chi_square_with_continuity_correction_for_many_discordant_pairs():
    a = [1] * 40 + [0] * 20
    b = [0] * 40 + [1] * 20
    result = mcnemar(a, b)
    assert result.b + result.c >= EXACT_BELOW
    assert result.statistic == pytest.approx((abs(40 - 20) - 1) ** 2 / 60)
    assert result.p_value == pytest.approx(stats.chi2.sf(result.statistic, 1))


def test_mcnemar_without_discordant_pairs_is_not_significant():
    assert mcnemar([1, 0, 1], [1, 0, 1]).p_value == 1.0


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="one length"):
        mcnemar([1, 0], [1])


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=200))
def test_mcnemar_is_symmetric_and_a_probability(pairs):
    a, b = zip(*pairs, strict=True)
    forward, backward = mcnemar(a, b), mcnemar(b, a)
    assert forward.p_value == pytest.approx(backward.p_value)
    assert (forward.b, forward.c) == (backward.c, backward.b)
    assert 0.0 <= forward.p_value <= 1.0


def test_wilcoxon_detects_a_shift_and_ignores_identical_errors():
    rng = np.random.default_rng(0)
    base = rng.exponential(size=300)
    assert wilcoxon(base + 0.5, base).p_value < 1e-6
    assert wilcoxon(base, base).p_value == 1.0
    result = wilcoxon(base + 0.5, base)
    assert (result.b, result.c) == (300, 0)
