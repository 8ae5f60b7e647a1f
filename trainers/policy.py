"""When to choose a champion, and when a challenger replaces it.

`PromotionPolicy` holds the settings; `PromotionPolicy.decide` is a pure function of the event
count, the current champion, the events since the last promotion, the candidates' prequential
scores and the champion's paired tests (`trainers.sequential.PairedTests`, kept by the trainer),
and returns a `Decision` (or None) that carries its evidence.

Rules
-----
* **Initial**: once ``warmup`` events are seen and there is no champion, the configured champion
  is chosen if there is one, else the candidate with the best primary metric on the recent window.
* **Challenger**: outside the ``cooldown`` after the last promotion, a challenger replaces the
  champion once its paired test has compared them on at least ``min_samples`` events and the
  test's anytime-valid lower bound on the mean loss difference (champion minus challenger, in
  bounded loss units) exceeds ``margin`` in those units: the challenger is better by at least
  ``margin``, with significance. When several challengers qualify, the highest lower bound wins;
  ties go to the candidate listed first.
* A challenger whose primary metric does not cover every recent event (no prediction, or no
  probabilities for log_loss) is never chosen.

Per-event losses
----------------
Each event's loss is the one whose mean is the primary metric (`trainers.metrics.event_loss`),
brought into [0, 1] so that the bounded-mean theory applies (`bounded_loss`):

* ``accuracy``: the error bit (a missing prediction is an error); ``margin`` is in accuracy units;
* ``log_loss``: ``min(log_loss, loss_scale) / loss_scale``, the log-loss clipped at
  ``loss_scale`` (default ``ln 1000``: a true label given less than 0.001 counts as a full loss);
  the margin is ``margin / loss_scale``;
* ``mae``: ``min(|error| / loss_scale, 1)``; the margin is ``margin / loss_scale``;
* ``rmse``: ``min(error^2 / loss_scale^2, 1)``; the margin is ``(margin / loss_scale)^2``, the
  least mean-squared-error gap an RMSE gap of ``margin`` implies;
* ``f1`` is refused: it is no mean of per-event losses, so no paired sequential test fits it;
  use ``accuracy`` or ``log_loss`` to promote (F1 is still reported).

A missing loss (no prediction of a regressor, no probabilities) counts as a full loss (1).
Regression needs ``loss_scale`` (the error beyond which a prediction is simply wrong) as soon as
its champion can be challenged.

Honest under continuous monitoring
----------------------------------
The policy looks every ``every`` events for as long as the model lives, and the trainer may run
several challengers: a fixed-sample test repeated at every look, on each challenger, would
promote an equally good challenger far more often than its level (Johari et al. 2022). Each
pair's test is a confidence sequence valid at every event at once (Waudby-Smith & Ramdas 2023;
Howard et al. 2021), and the model's ``alpha`` is spent over rounds of tests (round ``r``:
``alpha * 6 / (pi^2 r^2)``, Bonferroni within a round, which is Holm's first step (Holm 1979)):
whatever the looks, challengers and restarts, the probability of ever promoting a challenger
whose expected loss, given the past, is at no event lower than the champion's by more than
``margin`` is at most ``alpha`` (see `trainers.sequential`). Two learners equal only on average
over their seeds are not such a pair (one is often slightly better for a long stretch): the
margin is what keeps those from being promoted (``bench/promotion_quality.py``). The trainer
restarts the tests of the champion when it changes (promotion, adoption, vacancy) or when a
drift detector fires on it (`trainers.drift`, e.g. ADWIN, Bifet & Gavaldà 2007), and a
challenger's test when it is replaced (reset, adopted artifact): evidence gathered before a drift
does not then hold back a challenger that is better after it. ``every`` only sets how often the
bound is read; ``min_samples`` guards against promoting on a handful of events.

Requiring an effect size (margin) as well as significance avoids promotions on real but
negligible differences; the cooldown stops flapping between two candidates of equal skill.

Examples
--------
>>> from trainers.metrics import PrequentialScore
>>> from trainers.policy import PromotionPolicy
>>> from trainers.sequential import PairedTests
>>> policy = PromotionPolicy(warmup=4, every=4, min_samples=8, cooldown=0, alpha=0.05)
>>> scores = {name: PrequentialScore("classification", window=8) for name in ("old", "new")}
>>> tests = PairedTests(policy.alpha)
>>> for i in range(200):
...     scores["old"].update(True, i % 2 == 0)  # right half the time
...     scores["new"].update(True, True)   # always right
...     tests.observe("old", {"new": policy.bounded_loss(0.0)},
...                   defender_loss=policy.bounded_loss(float(i % 2)), event=i + 1)
>>> decision = policy.decide(events=200, champion="old", since_promotion=200, scores=scores,
...                          tests=tests.of("old"))
>>> decision.kind, decision.candidate, decision.evidence["window"], decision.evidence["n"]
('challenger', 'new', [1, 200], 200)
>>> round(decision.evidence["statistic"], 2), round(decision.evidence["lower"], 3)
(0.5, 0.376)
>>> round(decision.evidence["alpha_spent"], 4), decision.evidence["challengers"]
(0.0304, 1)

References
----------
[^1]: Waudby-Smith, I. and Ramdas, A., 2023. Estimating means of bounded random variables by
    betting. Journal of the Royal Statistical Society, Series B, 86(1), pp. 1-27.
[^2]: Howard, S.R., Ramdas, A., McAuliffe, J. and Sekhon, J., 2021. Time-uniform, nonparametric,
    nonasymptotic confidence sequences. The Annals of Statistics, 49(2), pp. 1055-1080.
[^3]: Holm, S., 1979. A simple sequentially rejective multiple test procedure. Scandinavian
    Journal of Statistics, 6(2), pp. 65-70.
[^4]: Johari, R., Koomen, P., Pekelis, L. and Walsh, D., 2022. Always valid inference:
    continuous monitoring of A/B tests. Operations Research, 70(3), pp. 1806-1821.
[^5]: Bifet, A. and Gavaldà, R., 2007. Learning from time-changing data with adaptive
    windowing. Proceedings of the 2007 SIAM International Conference on Data Mining,
    pp. 443-448.
[^6]: Gama, J., Sebastião, R. and Rodrigues, P.P., 2013. On evaluating stream learning
    algorithms. Machine Learning, 90(3), pp. 317-346 (prequential comparison of learners).

"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from trainers.errors import ConfigError
from trainers.metrics import (
    CLASSIFICATION_METRICS,
    HIGHER_IS_BETTER,
    REGRESSION_METRICS,
    is_complete,
)
from trainers.sequential import METHOD, PairedTest

__all__ = ["DEFAULT_LOG_LOSS_SCALE", "DEFAULT_METRIC", "Decision", "PromotionPolicy", "Scores"]

#: Primary metric used when the configuration names none.
DEFAULT_METRIC: Mapping[str, str] = {"classification": "accuracy", "regression": "mae"}
#: Log-loss counted as a full loss by default: a probability of 0.001 for the true label.
DEFAULT_LOG_LOSS_SCALE = math.log(1000)

# Metrics a promotion can be decided on: the means of per-event losses (not f1).
_METRICS_OF_TASK: Mapping[str, tuple[str, ...]] = {
    "classification": tuple(m for m in CLASSIFICATION_METRICS if m != "f1"),
    "regression": REGRESSION_METRICS,
}
_SCALED_METRICS = ("log_loss", *REGRESSION_METRICS)
_SETTING_RULES: Mapping[str, tuple[str, Callable[[Any], bool]]] = {
    "warmup": ("a positive integer", lambda v: isinstance(v, int) and v >= 1),
    "every": ("a positive integer", lambda v: isinstance(v, int) and v >= 1),
    "min_samples": ("a positive integer", lambda v: isinstance(v, int) and v >= 1),
    "cooldown": ("a non-negative integer", lambda v: isinstance(v, int) and v >= 0),
    "margin": ("a number >= 0", lambda v: isinstance(v, int | float) and v >= 0),
    # A pair's lower bound is one side of a two-sided CS at twice its share, which must be < 1.
    "alpha": ("a number in (0, 0.5]", lambda v: isinstance(v, int | float) and 0 < v <= 0.5),
    "loss_scale": (
        "a positive number or absent",
        lambda v: v is None or (isinstance(v, int | float) and math.isfinite(v) and v > 0),
    ),
}


class Scores(Protocol):
    """What the policy reads from a candidate's score (see `trainers.metrics.PrequentialScore`)."""

    @property
    def task(self) -> str: ...

    @property
    def history(self) -> int: ...

    @property
    def n(self) -> int: ...

    def recent(self, n: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Decision:
    """A promotion the policy asks for.

    Parameters
    ----------
    kind
        ``"initial"`` (first champion) or ``"challenger"`` (replaces the champion).
    candidate
        Name of the candidate to promote.
    reason
        One human-readable sentence.
    evidence
        The numbers behind the decision: events compared, metric values, the paired test's
        bounds and the alpha it spent, thresholds.

    """

    kind: str
    candidate: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromotionPolicy:
    """Settings of the promotion rules (see the module docstring).

    Parameters
    ----------
    metric
        Primary metric: ``accuracy``, ``log_loss`` (classification), ``mae``, ``rmse``
        (regression).
    warmup
        Events before the first champion is chosen.
    every
        The policy is evaluated every `every` events (and at `warmup`).
    min_samples
        Fewest events a challenger's paired test must have compared before it may win.
    margin
        Smallest improvement of the primary metric that may promote a challenger.
    alpha
        Probability of ever promoting a challenger that is not better by `margin`, over the
        model's whole life; at most 0.5.
    cooldown
        Events after a promotion during which no challenger is promoted.
    loss_scale
        ``mae``, ``rmse``: the absolute error that counts as a full loss (required to challenge
        a regression champion); ``log_loss``: the log-loss that does (default ``ln 1000``).

    """

    metric: str = "accuracy"
    warmup: int = 500
    every: int = 500
    min_samples: int = 1000
    margin: float = 0.01
    alpha: float = 0.01
    cooldown: int = 2000
    loss_scale: float | None = None

    def __post_init__(self) -> None:
        if self.metric not in HIGHER_IS_BETTER:
            raise ConfigError(
                f"policy.metric must be one of {list(HIGHER_IS_BETTER)}, got {self.metric!r}"
            )
        for name, (expected, is_valid) in _SETTING_RULES.items():
            value = getattr(self, name)
            # bool is an int subclass, but `warmup = true` is a typo, not a number.
            if isinstance(value, bool) or not is_valid(value):
                raise ConfigError(f"policy.{name} must be {expected}, got {value!r}")
        if self.loss_scale is not None and self.metric not in _SCALED_METRICS:
            raise ConfigError(
                f"policy.loss_scale is for {list(_SCALED_METRICS)}: {self.metric} losses are "
                "error bits already"
            )

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any], task: str) -> PromotionPolicy:
        """Build the policy of a model from its ``policy`` table, defaulting the metric per task.

        >>> PromotionPolicy.from_dict({"margin": 0.5}, "regression").metric
        'mae'
        >>> PromotionPolicy.from_dict({"metric": "mae"}, "classification")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        trainers.errors.ConfigError: policy.metric 'mae' does not fit classification; ...
        >>> PromotionPolicy.from_dict({"metric": "f1"}, "classification")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        trainers.errors.ConfigError: policy.metric 'f1' cannot decide promotions: ...

        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(settings) - known
        if unknown:
            raise ConfigError(f"policy: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        metric = settings.get("metric", DEFAULT_METRIC[task])
        if metric == "f1" and task == "classification":
            raise ConfigError(
                "policy.metric 'f1' cannot decide promotions: F1 is no mean of per-event losses, "
                "so no paired sequential test fits it; use 'accuracy' or 'log_loss' (F1 is still "
                "reported)"
            )
        if metric not in _METRICS_OF_TASK[task]:
            raise ConfigError(
                f"policy.metric {metric!r} does not fit {task}; "
                f"use one of {list(_METRICS_OF_TASK[task])}"
            )
        return cls(**{**settings, "metric": metric})

    @property
    def scale(self) -> float | None:
        """The loss that counts as a full loss (None for accuracy; None when not configured)."""
        if self.metric == "log_loss" and self.loss_scale is None:
            return DEFAULT_LOG_LOSS_SCALE
        return self.loss_scale

    @property
    def loss_margin(self) -> float:
        """`margin` in bounded loss units: what a paired test's lower bound must exceed."""
        scale = self.scale
        if scale is None:
            return self.margin
        ratio = self.margin / scale
        return ratio * ratio if self.metric == "rmse" else ratio

    def bounded_loss(self, loss: float | None) -> float:
        """An event's loss for the metric (`trainers.metrics.event_loss`) brought into [0, 1].

        >>> PromotionPolicy(metric="mae", loss_scale=4.0).bounded_loss(2.0)
        0.5
        >>> PromotionPolicy(metric="rmse", loss_scale=4.0).bounded_loss(4.0)  # squared error
        0.25
        >>> PromotionPolicy(metric="mae", loss_scale=4.0).bounded_loss(None)
        1.0

        Raises `ConfigError` for a regression loss when no ``loss_scale`` is configured.
        """
        if loss is None:
            return 1.0
        scale = self.scale
        if scale is None:
            if self.metric != "accuracy":
                raise ConfigError(
                    f"policy.loss_scale is required to compare {self.metric} losses (the error "
                    "that counts as a full loss)"
                )
            return loss
        return min(loss / (scale * scale if self.metric == "rmse" else scale), 1.0)

    def due(self, events: int) -> bool:
        """Whether the policy should be evaluated after `events` events."""
        return events == self.warmup or (events > self.warmup and events % self.every == 0)

    def decide(
        self,
        *,
        events: int,
        champion: str | None,
        since_promotion: int,
        scores: Mapping[str, Scores],
        preferred: str | None = None,
        tests: Mapping[str, PairedTest] | None = None,
    ) -> Decision | None:
        """Return the promotion the rules call for after `events` events, or None.

        Parameters
        ----------
        events
            Events seen so far (the last one has sequence number `events`).
        champion
            The current champion, None before the first.
        since_promotion
            Events since the last promotion.
        scores
            Each candidate's prequential score, in the configuration's order.
        preferred
            The configured first champion, if any.
        tests
            The champion's paired test against each challenger, by challenger.

        """
        if not scores:
            return None
        if champion is None:
            # Every candidate scored the same events, so the same tail is a paired window.
            n = min(events, *(min(score.n, score.history) for score in scores.values()))
            if n == 0 or events < self.warmup:
                return None
            summaries = {name: score.recent(n) for name, score in scores.items()}
            return self._initial([events - n + 1, events], n, summaries, preferred)
        if since_promotion < self.cooldown or not tests:
            return None
        return self._challenger(events, champion, scores, tests)

    def _initial(
        self, window: list[int], n: int, summaries: Mapping[str, dict], preferred: str | None
    ) -> Decision | None:
        values = {name: summary[self.metric] for name, summary in summaries.items()}
        evidence = self._evidence(window, n, champion=None, champion_metric=None)
        evidence["candidates"] = values
        if preferred is not None:
            return Decision(
                kind="initial",
                candidate=preferred,
                reason=f"configured champion {preferred!r} chosen after {window[1]} warmup events",
                evidence={**evidence, "challenger_metric": values[preferred]},
            )
        eligible = [
            name for name, summary in summaries.items() if is_complete(self.metric, summary)
        ]
        if not eligible:
            return None
        best = self._best(eligible, values)
        return Decision(
            kind="initial",
            candidate=best,
            reason=(
                f"{best!r} has the best {self.metric} ({values[best]:.4f}) over events "
                f"{window[0]}-{window[1]} after warmup"
            ),
            evidence={**evidence, "challenger_metric": values[best]},
        )

    def _challenger(
        self,
        events: int,
        champion: str,
        scores: Mapping[str, Scores],
        tests: Mapping[str, PairedTest],
    ) -> Decision | None:
        threshold = self.loss_margin
        qualified = [
            name
            for name, test in tests.items()
            if name in scores
            and test.n >= self.min_samples
            and test.lower > threshold
            and is_complete(self.metric, scores[name].recent(test.n))
        ]
        if not qualified:
            return None
        # max() keeps the first of equal values, so ties go to the candidate listed first.
        best = max((name for name in scores if name in qualified), key=lambda n: tests[n].lower)
        test = tests[best]
        window = [test.started + 1, events]
        n = min(test.n, scores[champion].history, scores[best].history)
        champion_value = scores[champion].recent(n)[self.metric]
        challenger_value = scores[best].recent(n)[self.metric]
        evidence = self._evidence(window, test.n, champion=champion, champion_metric=champion_value)
        evidence.update(
            challenger_metric=challenger_value,
            metric_events=n,
            test=METHOD,
            statistic=test.mean,
            lower=test.lower,
            upper=test.upper,
            threshold=threshold,
            alpha_spent=test.alpha,
            round=test.round,
            challengers=test.pairs,
            qualified=len(qualified),
        )
        reason = (
            f"{best!r} beat champion {champion!r} on {self.metric} over events "
            f"{window[0]}-{window[1]}: mean loss difference {test.mean:.4f}, anytime-valid "
            f"lower bound {test.lower:.4f} > {threshold:.4g} (margin {self.margin}) at alpha "
            f"{test.alpha:.3g} (round {test.round}, {test.pairs} challenger(s), model alpha "
            f"{self.alpha})"
        )
        return Decision(kind="challenger", candidate=best, reason=reason, evidence=evidence)

    def _best(self, names: list[str], values: Mapping[str, float]) -> str:
        sign = 1 if HIGHER_IS_BETTER[self.metric] else -1
        # max() keeps the first of equal values, so ties go to the candidate listed first.
        return max(names, key=lambda name: sign * values[name])

    def _evidence(
        self, window: list[int], n: int, *, champion: str | None, champion_metric: float | None
    ) -> dict:
        return {
            "window": window,
            "n": n,
            "metric": self.metric,
            "champion": champion,
            "champion_metric": champion_metric,
            "challenger_metric": None,
            "test": None,
            "statistic": None,
            "p_value": None,
            "margin": self.margin,
            "loss_scale": self.scale,
            "alpha": self.alpha,
        }
