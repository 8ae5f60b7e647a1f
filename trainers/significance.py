"""Paired significance tests between two candidates scored on the same events.

All candidates of a model predict the same events in the same order, so their per-event losses
are paired. Comparing paired losses removes the event-to-event variance that an unpaired test on
two accuracies would have to fight, and so detects a real difference with fewer events.

* `mcnemar` compares error bits (classification). Only the discordant events matter: ``b``, where
  A errs and B does not, and ``c``, where B errs and A does not. Under equal error rates each
  discordant event is a fair coin flip. With fewer than 25 discordant events the exact two-sided
  binomial test is used (statistic: ``min(b, c)``); otherwise the chi-square statistic with
  Edwards' continuity correction, ``(|b - c| - 1)² / (b + c)``, with one degree of freedom.
* `wilcoxon` compares absolute errors (regression) with the Wilcoxon signed-rank test; ``b`` and
  ``c`` count the events where A's, respectively B's, error is the larger. When every difference
  is zero the candidates are indistinguishable and the p-value is 1.

Both are two-sided: they test equality once, on a sample fixed in advance. Repeated at every
look of a policy they reject a true null far more often than their level, so promotions use the
anytime-valid paired test of `trainers.sequential` instead; these remain for one-off comparisons
and for the benchmark of the earlier rule (``bench/promotion_quality.py``).

Examples
--------
>>> from trainers.significance import mcnemar, wilcoxon
>>> result = mcnemar([1, 1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1])
>>> result.b, result.c, result.n, round(result.p_value, 4)
(6, 1, 8, 0.125)
>>> mcnemar([1, 0], [1, 0]).p_value
1.0
>>> wilcoxon([0.0, 0.0], [0.0, 0.0]).p_value
1.0
>>> result = wilcoxon([3.0, 2.5, 4.0, 3.5, 5.0, 4.5], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
>>> result.b, result.c, round(result.p_value, 4)
(6, 0, 0.0312)

References
----------
[^1]: McNemar, Q. (1947). Note on the sampling error of the difference between correlated
      proportions or percentages. Psychometrika, 12(2), 153-157.
[^2]: Edwards, A. L. (1948). Note on the "correction for continuity" in testing the significance
      of the difference between correlated proportions. Psychometrika, 13(3), 185-187.
[^3]: Wilcoxon, F. (1945). Individual comparisons by ranking methods. Biometrics Bulletin, 1(6),
      80-83.

"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["EXACT_BELOW", "TestResult", "mcnemar", "wilcoxon"]

#: Below this many discordant events, McNemar's test uses the exact binomial distribution.
EXACT_BELOW = 25


@dataclass(frozen=True)
class TestResult:
    """Outcome of a paired test.

    Parameters
    ----------
    statistic
        The test statistic (see `mcnemar` and `wilcoxon`).
    p_value
        Two-sided p-value of the hypothesis that both candidates are equally good.
    n
        Number of paired events.
    b
        Events where the first candidate did worse.
    c
        Events where the second candidate did worse.

    """

    __test__ = False  # not a pytest test class, despite its name

    statistic: float
    p_value: float
    n: int
    b: int
    c: int


def _paired(losses_a: Sequence[float], losses_b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(losses_a, dtype=float)
    b = np.asarray(losses_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired losses must be two sequences of one length, got {a.shape} {b.shape}"
        )
    return a, b


def mcnemar(errors_a: Sequence[int], errors_b: Sequence[int]) -> TestResult:
    """McNemar's test on paired error bits (1: wrong, 0: right)."""
    a, b = _paired(errors_a, errors_b)
    only_a = int(np.count_nonzero((a != 0) & (b == 0)))
    only_b = int(np.count_nonzero((a == 0) & (b != 0)))
    discordant = only_a + only_b
    if discordant == 0:
        return TestResult(statistic=0.0, p_value=1.0, n=len(a), b=0, c=0)
    if discordant < EXACT_BELOW:
        smaller = min(only_a, only_b)
        p_value = min(1.0, 2.0 * float(stats.binom.cdf(smaller, discordant, 0.5)))
        return TestResult(float(smaller), p_value, len(a), only_a, only_b)
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    return TestResult(statistic, float(stats.chi2.sf(statistic, df=1)), len(a), only_a, only_b)


def wilcoxon(absolute_errors_a: Sequence[float], absolute_errors_b: Sequence[float]) -> TestResult:
    """Wilcoxon signed-rank test on paired absolute errors (zero differences are dropped)."""
    a, b = _paired(absolute_errors_a, absolute_errors_b)
    differences = a - b
    worse_a = int(np.count_nonzero(differences > 0))
    worse_b = int(np.count_nonzero(differences < 0))
    if worse_a + worse_b == 0:
        return TestResult(statistic=0.0, p_value=1.0, n=len(a), b=0, c=0)
    result = stats.wilcoxon(differences, zero_method="wilcox")
    return TestResult(float(result.statistic), float(result.pvalue), len(a), worse_a, worse_b)
