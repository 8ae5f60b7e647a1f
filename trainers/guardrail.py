"""Anytime-valid guardrails for served versions: a canary against stable, and stable against itself.

Both are looked at after every outcome, for as long as the rollout lasts. A fixed-sample test
repeated at every look rejects a true null far more often than its level (the more looks, the
more chances to cross by luck), so both use statistics that stay valid at data-dependent
stopping times: a confidence sequence for the canary, an e-process for the stable monitor.

Losses
------
Every outcome becomes a loss in [0, 1], lower is better, so that the bounded-mean theory applies:

* classification: the error bit (1 when the prediction is wrong or missing), so the mean loss is
  one minus accuracy;
* regression: ``min(|y_true - y_pred| / scale, 1)``, the absolute error in units of the
  configured ``scale`` and clipped at one (a missing prediction counts as 1); its mean is the MAE
  of errors clipped at ``scale``, divided by ``scale``. Choose ``scale`` as an error beyond which
  a prediction is simply wrong: larger errors count the same.

Canary guardrail
----------------
`CanaryGuardrail` keeps, for each arm, a two-sided confidence sequence (CS) at level
``alpha / 2`` for its mean loss: the predictable-mixture empirical-Bernstein CS of Waudby-Smith &
Ramdas (2023, Theorem 2 and section 3.2), with its running intersection. With probability at
least ``1 - alpha`` both sequences cover their arm's mean at every time at once, so the interval
``[canary.lower - stable.upper, canary.upper - stable.lower]`` covers the difference of mean
losses (canary minus stable) at every time. `CanaryGuardrail.decide` says

* ``rollback`` as soon as the lower bound of the difference is above 0: the canary is worse,
  with significance. No minimum count: a broken canary is stopped at once;
* ``rollout`` once both arms have ``min_outcomes`` outcomes and the upper bound of the
  difference is at most ``tolerance``: the canary is not worse by more than ``tolerance``;
* ``continue`` otherwise.

Whatever the stopping rule and however often one looks, an equally good canary is rolled back,
and a canary worse than ``tolerance`` rolled out, with probability at most ``alpha``. The first
``rollout`` or ``rollback`` is final: later calls return it again. The arms need not share
events (the canary serves a hashed fraction of the traffic), and the fraction may change.

Stable monitor
--------------
`StableMonitor` raises an ``alert`` when the stable version's mean loss rises above its reference
level plus ``tolerance``, on any stretch of outcomes, not only since the start. Its statistic is
a weighted Shiryaev-Roberts mixture of betting e-processes (Shin, Ramdas & Rinaldo 2024; Ramdas
et al. 2023): for a change at outcome ``j`` and a bet ``lam``, the wealth
``prod_{i >= j} (1 + lam * (loss_i - m))`` with ``m = reference + tolerance``; the mixture over
``j`` (weights ``1 / (j (j + 1))``, which sum to one) and over a fixed grid of bets is, under the
null "the conditional mean loss never exceeds ``m``", dominated by a test supermartingale, so by
Ville's inequality it ever reaches ``1 / alpha`` with probability at most ``alpha``. It is
updated in O(1): ``S = (S + w_t) * (1 + lam * (loss_t - m))``. The price of watching for late
changes is a delay that grows like ``2 log(j)`` nats of evidence for a change at outcome ``j``.
The reference is given (the level measured at promotion, in metric units: accuracy or MAE) or
measured on the first ``warmup`` outcomes; in that case its upper confidence bound at
``alpha / 2`` is used and the e-process is run at ``alpha / 2``, so the overall level stays
``alpha``.

Both classes keep running sums only (O(1) memory and time per outcome), involve no clock and
no randomness, and pickle.

Examples
--------
>>> from trainers.guardrail import CanaryGuardrail
>>> guard = CanaryGuardrail("classification", alpha=0.05, tolerance=0.02, min_outcomes=100)
>>> for i in range(400):
...     guard.update("stable", True, i % 10 != 0)  # 90% accuracy
...     guard.update("canary", True, i % 2 == 0)   # 50% accuracy
...     if guard.decide().kind != "continue":
...         break
>>> decision = guard.decide()
>>> decision.kind, decision.evidence["n_canary"], decision.evidence["n_stable"]
('rollback', 70, 70)
>>> round(decision.evidence["difference"], 2), round(decision.evidence["lower"], 4)
(0.4, 0.0027)

>>> from trainers.guardrail import StableMonitor
>>> monitor = StableMonitor("regression", reference=1.0, scale=10.0, tolerance=0.05)
>>> for i in range(300):
...     monitor.update(0.0, 1.0 if i < 100 else 5.0)  # MAE 1, then 5
...     if monitor.decide().kind == "alert":
...         break
>>> monitor.decide().kind, monitor.n
('alert', 117)

References
----------
[^1]: Waudby-Smith, I. and Ramdas, A., 2023. Estimating means of bounded random variables by
    betting. Journal of the Royal Statistical Society, Series B, 86(1), pp. 1-27.
[^2]: Howard, S.R., Ramdas, A., McAuliffe, J. and Sekhon, J., 2021. Time-uniform, nonparametric,
    nonasymptotic confidence sequences. The Annals of Statistics, 49(2), pp. 1055-1080.
[^3]: Shin, J., Ramdas, A. and Rinaldo, A., 2024. E-detectors: a nonparametric framework for
    sequential change detection. The New England Journal of Statistics in Data Science, 2(2),
    pp. 229-260.
[^4]: Ramdas, A., Grünwald, P., Vovk, V. and Shafer, G., 2023. Game-theoretic statistics and
    safe anytime-valid inference. Statistical Science, 38(4), pp. 576-601.
[^5]: Johari, R., Koomen, P., Pekelis, L. and Walsh, D., 2022. Always valid inference:
    continuous monitoring of A/B tests. Operations Research, 70(3), pp. 1806-1821 (why repeated
    fixed-sample tests fail).

"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from trainers.errors import ConfigError

__all__ = [
    "ALERT",
    "CONTINUE",
    "ROLLBACK",
    "ROLLOUT",
    "CanaryGuardrail",
    "ConfidenceSequence",
    "GuardDecision",
    "StableMonitor",
    "confidence_sequence",
    "outcome_loss",
]

ROLLOUT = "rollout"
ROLLBACK = "rollback"
CONTINUE = "continue"
ALERT = "alert"

TASKS = ("classification", "regression")
ARMS = ("canary", "stable")

# The bets of the empirical-Bernstein CS are truncated at 1/2, as in Waudby-Smith & Ramdas and
# confseq's `predmix_empbern_*` defaults: a larger bet buys little width and costs stability.
_TRUNCATION = 0.5
# Regularised running mean and variance behind the bets start from one fake observation of mean
# 1/2 and variance 1/4 (the largest variance in [0, 1]), as in the paper and confseq.
_PRIOR_MEAN = 0.5
_PRIOR_VARIANCE = 0.25
# Bets of the stable monitor: lam_k = 2^-k / m, k = 1..10. The largest keeps every factor
# 1 + lam * (loss - m) >= 1/2; the smallest (1/1024 of the largest) suits drifts ~500 times
# smaller than m. Mixing a grid costs log(10) nats, little next to log(1 / alpha).
_MONITOR_BETS = 10

CS_METHOD = (
    "predictable-mixture empirical-Bernstein confidence sequence (Waudby-Smith & Ramdas 2023)"
)
MONITOR_METHOD = "weighted Shiryaev-Roberts betting e-process (Shin, Ramdas & Rinaldo 2024)"


def _check(owner: str, name: str, value: Any, expected: str, ok: Callable[[Any], bool]) -> None:
    # bool is an int subclass, but `alpha = true` is a typo, not a number.
    if isinstance(value, bool) or not ok(value):
        raise ConfigError(f"{owner}.{name} must be {expected}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _check_task(owner: str, task: str, scale: float | None) -> None:
    if task not in TASKS:
        raise ConfigError(f"{owner}.task must be one of {list(TASKS)}, got {task!r}")
    if task == "regression":
        _check(
            owner, "scale", scale, "a number > 0 for regression", lambda v: _is_number(v) and v > 0
        )


def outcome_loss(task: str, y_true: Any, y_pred: Any, scale: float | None = None) -> float:
    """The bounded loss in [0, 1] of one outcome (see the module docstring).

    >>> outcome_loss("classification", "cat", "dog"), outcome_loss("classification", 1, 1)
    (1.0, 0.0)
    >>> outcome_loss("regression", 3.0, 1.0, scale=4.0), outcome_loss("regression", 3.0, 9.0, 4.0)
    (0.5, 1.0)
    >>> outcome_loss("regression", 3.0, None, scale=4.0)
    1.0

    """
    if y_pred is None:
        return 1.0
    if task == "classification":
        return 0.0 if y_pred == y_true else 1.0
    assert scale is not None, "regression losses need a scale"
    return min(abs(y_pred - y_true) / scale, 1.0)


def _check_loss(loss: float) -> float:
    if not 0.0 <= loss <= 1.0:  # also rejects NaN
        raise ValueError(f"a loss must be in [0, 1], got {loss!r}")
    return float(loss)


@dataclass(frozen=True)
class GuardDecision:
    """What a guardrail asks for after the outcomes seen so far.

    Parameters
    ----------
    kind
        ``"rollout"``, ``"rollback"`` or ``"continue"`` (`CanaryGuardrail`); ``"alert"`` or
        ``"continue"`` (`StableMonitor`).
    reason
        One human-readable sentence.
    evidence
        The numbers behind the decision: counts, mean losses, confidence bounds or e-value,
        thresholds, alpha and the method's name. Plain floats, ints and strings (JSON-ready).

    """

    kind: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


class ConfidenceSequence:
    """Two-sided empirical-Bernstein confidence sequence for the mean of losses in [0, 1].

    The predictable-mixture empirical-Bernstein CS (PrPl-EB) of Waudby-Smith & Ramdas (2023),
    each side at ``alpha / 2``, with bets ``min(sqrt(2 log(2 / alpha) / (sigma2 t log(1 + t))),
    1/2)`` from the regularised variance of the previous losses, and its running intersection.
    With probability at least ``1 - alpha``, ``lower <= mean <= upper`` at every time at once.
    Matches confseq's ``predmix_empbern_twosided_cs(x, alpha, running_intersection=True)``
    (tested), but is updated in O(1) per loss rather than recomputed over the whole history.

    Parameters
    ----------
    alpha
        Probability that the sequence ever misses the mean.

    Examples
    --------
    >>> cs = ConfidenceSequence(alpha=0.05)
    >>> for loss in [0.0, 1.0] * 200:
    ...     cs.update(loss)
    >>> cs.n, cs.mean, round(cs.lower, 3), round(cs.upper, 3)
    (400, 0.5, 0.406, 0.594)

    """

    def __init__(self, alpha: float = 0.05) -> None:
        _check(
            "confidence_sequence",
            "alpha",
            alpha,
            "a number in (0, 1)",
            lambda v: _is_number(v) and 0 < v < 1,
        )
        self.alpha = float(alpha)
        self._log_term = math.log(2 / alpha)  # log(1 / (alpha / 2)): each side at alpha / 2
        self.n = 0
        self._sum = 0.0  # sum of losses
        self._squares = _PRIOR_VARIANCE  # prior + sum of (loss_i - regularised mean_i)^2
        self._bets = 0.0  # sum of bets
        self._weighted = 0.0  # sum of bet * loss
        self._penalty_low = 0.0  # sum of psi(bet) * (loss - mean_{i-1})^2
        self._penalty_high = 0.0  # same for 1 - loss, whose running mean is 1 - mean_{i-1}
        self.lower = 0.0
        self.upper = 1.0

    @property
    def mean(self) -> float | None:
        """Mean of the losses so far (None before the first)."""
        return self._sum / self.n if self.n else None

    def update(self, loss: float) -> None:
        """Add one loss in [0, 1] and tighten the bounds."""
        x = _check_loss(loss)
        t = self.n + 1
        variance = self._squares / t  # regularised variance of losses 1..t-1 (prior at t = 1)
        bet = min(math.sqrt(2 * self._log_term / (variance * t * math.log1p(t))), _TRUNCATION)
        psi = -math.log1p(-bet) - bet
        # confseq centres the variance proxy on the plain running mean, 0 before any loss, for
        # the losses and for their complements alike; kept so that the two agree exactly.
        previous = self._sum / self.n if self.n else 0.0
        previous_complement = 1.0 - previous if self.n else 0.0
        self._penalty_low += psi * (x - previous) ** 2
        self._penalty_high += psi * ((1.0 - x) - previous_complement) ** 2
        self._bets += bet
        self._weighted += bet * x
        self._sum += x
        self.n = t
        self._squares += (x - (_PRIOR_MEAN + self._sum) / (t + 1)) ** 2
        low = max((self._weighted - self._log_term - self._penalty_low) / self._bets, 0.0)
        complement = (
            self._bets - self._weighted - self._log_term - self._penalty_high
        ) / self._bets
        high = 1.0 - max(complement, 0.0)
        self.lower = max(self.lower, low)
        self.upper = min(self.upper, high)


def confidence_sequence(
    losses: npt.ArrayLike, alpha: float = 0.05
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Bounds of `ConfidenceSequence` after each loss, computed for a whole array at once.

    Vectorised over the last axis (one stream per row), for simulations; equal to feeding the
    losses one by one to a `ConfidenceSequence` and reading ``(lower, upper)`` after each.

    >>> lower, upper = confidence_sequence([0.0, 1.0] * 200, alpha=0.05)
    >>> round(float(lower[-1]), 3), round(float(upper[-1]), 3)
    (0.406, 0.594)

    """
    x = np.asarray(losses, dtype=np.float64)
    if x.size and (np.isnan(x).any() or x.min() < 0 or x.max() > 1):
        raise ValueError("losses must be in [0, 1]")
    log_term = math.log(2 / alpha)
    t = np.arange(1, x.shape[-1] + 1, dtype=np.float64)
    sums = np.cumsum(x, axis=-1)
    regularised_mean = (_PRIOR_MEAN + sums) / (t + 1)
    squares = _PRIOR_VARIANCE + np.cumsum((x - regularised_mean) ** 2, axis=-1)
    previous_squares = np.concatenate(
        [np.full((*x.shape[:-1], 1), _PRIOR_VARIANCE), squares[..., :-1]], axis=-1
    )
    variance = previous_squares / t
    bets = np.minimum(np.sqrt(2 * log_term / (variance * t * np.log1p(t))), _TRUNCATION)
    psi = -np.log1p(-bets) - bets
    zeros = np.zeros((*x.shape[:-1], 1))
    previous = np.concatenate([zeros, (sums / t)[..., :-1]], axis=-1)
    previous_complement = np.concatenate([zeros, (1 - sums / t)[..., :-1]], axis=-1)
    bet_sums = np.cumsum(bets, axis=-1)
    weighted = np.cumsum(bets * x, axis=-1)
    penalty_low = np.cumsum(psi * (x - previous) ** 2, axis=-1)
    penalty_high = np.cumsum(psi * ((1 - x) - previous_complement) ** 2, axis=-1)
    low = np.maximum((weighted - log_term - penalty_low) / bet_sums, 0.0)
    high = 1 - np.maximum((bet_sums - weighted - log_term - penalty_high) / bet_sums, 0.0)
    return np.maximum.accumulate(low, axis=-1), np.minimum.accumulate(high, axis=-1)


class CanaryGuardrail:
    """Decides ``rollout``, ``rollback`` or ``continue`` for a canary (see the module docstring).

    Parameters
    ----------
    task
        ``"classification"`` (loss: error bit) or ``"regression"`` (loss: clipped absolute
        error over `scale`).
    alpha
        Largest probability of rolling back a canary that is not worse than stable, and of
        rolling out one worse by more than `tolerance`, however often `decide` is called.
    tolerance
        How much worse (in mean loss: accuracy points, or clipped MAE over `scale`) the canary
        may be and still be rolled out.
    min_outcomes
        Outcomes each arm needs before a rollout.
    scale
        Regression only: the absolute error that counts as a full loss.

    """

    def __init__(
        self,
        task: str,
        *,
        alpha: float = 0.05,
        tolerance: float = 0.02,
        min_outcomes: int = 1000,
        scale: float | None = None,
    ) -> None:
        owner = "guardrail"
        _check_task(owner, task, scale)
        _check(owner, "alpha", alpha, "a number in (0, 1)", lambda v: _is_number(v) and 0 < v < 1)
        _check(
            owner,
            "tolerance",
            tolerance,
            "a number in [0, 1)",
            lambda v: _is_number(v) and 0 <= v < 1,
        )
        _check(
            owner,
            "min_outcomes",
            min_outcomes,
            "a positive integer",
            lambda v: isinstance(v, int) and v >= 1,
        )
        self.task = task
        self.alpha = float(alpha)
        self.tolerance = float(tolerance)
        self.min_outcomes = min_outcomes
        self.scale = None if scale is None else float(scale)
        # alpha / 2 per arm: both cover at all times with probability >= 1 - alpha (union bound).
        self.arms: dict[str, ConfidenceSequence] = {
            arm: ConfidenceSequence(alpha / 2) for arm in ARMS
        }
        self._final: GuardDecision | None = None

    def update(self, arm: str, y_true: Any, y_pred: Any) -> None:
        """Add the outcome of one prediction served by `arm` (``"canary"`` or ``"stable"``)."""
        self.update_loss(arm, outcome_loss(self.task, y_true, y_pred, self.scale))

    def update_loss(self, arm: str, loss: float) -> None:
        """Add one outcome already expressed as a loss in [0, 1]."""
        if arm not in self.arms:
            raise ValueError(f"arm must be one of {list(ARMS)}, got {arm!r}")
        self.arms[arm].update(loss)

    def bounds(self) -> tuple[float, float]:
        """Confidence bounds on canary mean loss minus stable mean loss, valid at all times."""
        canary, stable = self.arms["canary"], self.arms["stable"]
        return canary.lower - stable.upper, canary.upper - stable.lower

    def decide(self) -> GuardDecision:
        """The guardrail's decision now; the first rollout or rollback is returned ever after."""
        if self._final is not None:
            return self._final
        lower, upper = self.bounds()
        canary, stable = self.arms["canary"], self.arms["stable"]
        evidence = self._evidence(lower, upper)
        worse = f"canary mean loss - stable mean loss in [{lower:.4f}, {upper:.4f}]"
        if lower > 0:
            self._final = GuardDecision(
                ROLLBACK,
                f"canary is worse than stable: {worse} (alpha {self.alpha}), "
                f"after {canary.n} canary and {stable.n} stable outcomes",
                evidence,
            )
            return self._final
        if min(canary.n, stable.n) >= self.min_outcomes and upper <= self.tolerance:
            self._final = GuardDecision(
                ROLLOUT,
                f"canary is not worse than stable by more than {self.tolerance}: {worse} "
                f"(alpha {self.alpha}), after {canary.n} canary and {stable.n} stable outcomes",
                evidence,
            )
            return self._final
        return GuardDecision(CONTINUE, f"undecided: {worse}", evidence)

    def _evidence(self, lower: float, upper: float) -> dict[str, Any]:
        canary, stable = self.arms["canary"], self.arms["stable"]
        difference = (
            canary.mean - stable.mean
            if canary.mean is not None and stable.mean is not None
            else None
        )
        return {
            "task": self.task,
            "loss": "error rate"
            if self.task == "classification"
            else "clipped absolute error / scale",
            "scale": self.scale,
            "n_canary": canary.n,
            "n_stable": stable.n,
            "canary_loss": canary.mean,
            "stable_loss": stable.mean,
            "difference": difference,
            "lower": lower,
            "upper": upper,
            "canary_bounds": [canary.lower, canary.upper],
            "stable_bounds": [stable.lower, stable.upper],
            "tolerance": self.tolerance,
            "min_outcomes": self.min_outcomes,
            "alpha": self.alpha,
            "method": CS_METHOD + ", one per arm at alpha/2",
        }


class StableMonitor:
    """Raises an ``alert`` when the stable version's loss rises above its own reference level.

    Parameters
    ----------
    task
        ``"classification"`` or ``"regression"`` (losses as in `CanaryGuardrail`).
    reference
        The version's reference level in metric units: accuracy (classification) or MAE
        (regression; as a loss, ``MAE / scale``, which is at least the clipped loss, so the
        monitor errs on the quiet side). None: measured on the first `warmup` outcomes.
    warmup
        Outcomes that measure the reference when it is not given (not monitored themselves).
    tolerance
        Rise of the mean loss above the reference that is tolerated; must be positive.
    alpha
        Largest probability of ever alerting while the mean loss stays within `tolerance` of
        the reference.
    scale
        Regression only: the absolute error that counts as a full loss.

    """

    def __init__(
        self,
        task: str,
        *,
        reference: float | None = None,
        warmup: int = 1000,
        tolerance: float = 0.02,
        alpha: float = 0.05,
        scale: float | None = None,
    ) -> None:
        owner = "monitor"
        _check_task(owner, task, scale)
        _check(owner, "alpha", alpha, "a number in (0, 1)", lambda v: _is_number(v) and 0 < v < 1)
        _check(
            owner,
            "tolerance",
            tolerance,
            "a number in (0, 1)",
            lambda v: _is_number(v) and 0 < v < 1,
        )
        _check(
            owner, "warmup", warmup, "a positive integer", lambda v: isinstance(v, int) and v >= 1
        )
        if reference is not None:
            _check(
                owner, "reference", reference, "a number >= 0", lambda v: _is_number(v) and v >= 0
            )
            if task == "classification" and reference > 1:
                raise ConfigError(
                    f"monitor.reference must be an accuracy in [0, 1], got {reference!r}"
                )
        self.task = task
        self.tolerance = float(tolerance)
        self.alpha = float(alpha)
        self.warmup = warmup
        self.scale = None if scale is None else float(scale)
        self.reference = None if reference is None else float(reference)
        self.reference_loss: float | None = None
        self.level: float | None = None
        self._bets: list[float] = []
        # A measured reference spends alpha / 2 on its own upper bound, the e-process the rest.
        self._test_alpha = self.alpha if reference is not None else self.alpha / 2
        self._reference_cs = None if reference is not None else ConfidenceSequence(self.alpha / 2)
        if reference is not None:
            loss = 1.0 - reference if task == "classification" else reference / (scale or 1.0)
            self._start(min(loss, 1.0))
        self.n = 0  # monitored outcomes (after warmup when the reference is measured)
        self._sum = 0.0
        self._wealth = [0.0] * _MONITOR_BETS
        self.e_value = 0.0
        self._final: GuardDecision | None = None

    def _start(self, reference_loss: float) -> None:
        self.reference_loss = reference_loss
        self.level = reference_loss + self.tolerance  # the null: mean loss <= level
        self._bets = [2.0**-k / self.level for k in range(1, _MONITOR_BETS + 1)]

    def update(self, y_true: Any, y_pred: Any) -> None:
        """Add the outcome of one prediction served by the stable version."""
        self.update_loss(outcome_loss(self.task, y_true, y_pred, self.scale))

    def update_loss(self, loss: float) -> None:
        """Add one outcome already expressed as a loss in [0, 1]."""
        x = _check_loss(loss)
        if self.reference_loss is None:
            assert self._reference_cs is not None
            self._reference_cs.update(x)
            if self._reference_cs.n == self.warmup:
                self._start(self._reference_cs.upper)
            return
        self.n += 1
        self._sum += x
        if self._final is not None:
            return  # alerted: the wealth would only grow towards overflow
        level = self.level
        assert level is not None  # set with the reference
        t = self.n
        weight = 1.0 / (t * (t + 1))  # prior weight of a change at outcome t; sums to 1
        self._wealth = [
            (wealth + weight) * (1.0 + bet * (x - level))
            for wealth, bet in zip(self._wealth, self._bets, strict=True)
        ]
        self.e_value = sum(self._wealth) / _MONITOR_BETS

    def decide(self) -> GuardDecision:
        """``alert`` once the e-value reaches ``1 / alpha``, and ever after; else ``continue``."""
        if self._final is not None:
            return self._final
        evidence = self._evidence()
        if self._reference_cs is not None and self.reference_loss is None:
            measured = f"{self._reference_cs.n}/{self.warmup}"
            return GuardDecision(CONTINUE, f"measuring the reference: {measured}", evidence)
        threshold = 1.0 / self._test_alpha
        if self.e_value >= threshold:
            self._final = GuardDecision(
                ALERT,
                f"stable mean loss rose above {self.level:.4f} "
                f"(reference {self.reference_loss:.4f} + tolerance {self.tolerance}): "
                f"e-value {self.e_value:.3g} >= {threshold:.3g} "
                f"after {self.n} outcomes",
                evidence,
            )
            return self._final
        return GuardDecision(CONTINUE, f"e-value {self.e_value:.3g} < {threshold:.3g}", evidence)

    def _evidence(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "n": self.n,
            "live_loss": self._sum / self.n if self.n else None,
            "reference": self.reference,
            "reference_loss": self.reference_loss,
            "reference_source": "given"
            if self.reference is not None
            else f"upper bound of first {self.warmup}",
            "tolerance": self.tolerance,
            "e_value": self.e_value,
            "threshold": 1.0 / self._test_alpha,
            "alpha": self.alpha,
            "method": MONITOR_METHOD,
        }
