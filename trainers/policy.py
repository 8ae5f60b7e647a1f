"""When to choose a champion, and when a challenger replaces it.

`PromotionPolicy` holds the settings; `PromotionPolicy.decide` is a pure function of the event
count, the current champion, the events since the last promotion and the candidates' prequential
scores, and returns a `Decision` (or None) that carries its evidence.

Rules
-----
* **Initial**: once ``warmup`` events are seen and there is no champion, the configured champion
  is chosen if there is one, else the candidate with the best primary metric on the recent window.
* **Challenger**: outside the ``cooldown`` after the last promotion, and once at least
  ``min_samples`` paired events are kept, a challenger replaces the champion when, on exactly the
  same recent events, (1) its primary metric is better by at least ``margin`` (an absolute
  difference in the metric's units, direction-aware: higher accuracy/f1, lower log_loss/mae/rmse)
  and (2) the paired test rejects equality at level ``alpha`` (McNemar's test on error bits for
  classification, Wilcoxon's signed-rank test on absolute errors for regression). When several
  challengers qualify, the best metric wins; ties go to the candidate listed first.
* A candidate whose primary metric does not cover every event of the window (no prediction, or no
  probabilities for log_loss) is never chosen, and a champion in that state is not challenged.

Requiring both an effect size (margin) and significance (alpha) avoids promotions on noise as
well as promotions on real but negligible differences; the cooldown stops flapping between two
candidates of equal skill.

Examples
--------
>>> from trainers.metrics import PrequentialScore
>>> from trainers.policy import PromotionPolicy
>>> policy = PromotionPolicy(warmup=4, every=4, min_samples=8, cooldown=0, alpha=0.05)
>>> scores = {name: PrequentialScore("classification", window=8) for name in ("old", "new")}
>>> for i in range(8):
...     scores["old"].update(True, i < 2)  # right only twice
...     scores["new"].update(True, True)   # always right
>>> decision = policy.decide(events=8, champion="old", since_promotion=4, scores=scores)
>>> decision.kind, decision.candidate, decision.evidence["window"], decision.evidence["test"]
('challenger', 'new', [1, 8], 'mcnemar')
>>> round(decision.evidence["p_value"], 4), decision.evidence["challenger_metric"]
(0.0312, 1.0)

References
----------
[^1]: Dietterich, T.G., 1998. Approximate statistical tests for comparing supervised
    classification learning algorithms. Neural Computation, 10(7), pp. 1895-1923.
[^2]: Gama, J., Sebastião, R. and Rodrigues, P.P., 2013. On evaluating stream learning
    algorithms. Machine Learning, 90(3), pp. 317-346 (comparing learners on sliding windows).

"""

from __future__ import annotations

import dataclasses
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
from trainers.significance import TestResult, mcnemar, wilcoxon

__all__ = ["DEFAULT_METRIC", "Decision", "PromotionPolicy", "Scores"]

#: Primary metric used when the configuration names none.
DEFAULT_METRIC: Mapping[str, str] = {"classification": "accuracy", "regression": "mae"}

_METRICS_OF_TASK: Mapping[str, tuple[str, ...]] = {
    "classification": CLASSIFICATION_METRICS,
    "regression": REGRESSION_METRICS,
}
_SETTING_RULES: Mapping[str, tuple[str, Callable[[Any], bool]]] = {
    "warmup": ("a positive integer", lambda v: isinstance(v, int) and v >= 1),
    "every": ("a positive integer", lambda v: isinstance(v, int) and v >= 1),
    "min_samples": ("a positive integer", lambda v: isinstance(v, int) and v >= 1),
    "cooldown": ("a non-negative integer", lambda v: isinstance(v, int) and v >= 0),
    "margin": ("a number >= 0", lambda v: isinstance(v, int | float) and v >= 0),
    "alpha": ("a number in (0, 1)", lambda v: isinstance(v, int | float) and 0 < v < 1),
}
# Absorbs float rounding in "better by at least margin" (0.91 - 0.90 < 0.01 in binary floats).
_ROUNDING = 1e-12


class Scores(Protocol):
    """What the policy reads from a candidate's score (see `trainers.metrics.PrequentialScore`)."""

    @property
    def task(self) -> str: ...

    @property
    def history(self) -> int: ...

    @property
    def n(self) -> int: ...

    def recent(self, n: int) -> dict[str, Any]: ...

    def losses(self, n: int) -> list[Any]: ...


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
        The numbers behind the decision: window, metric values, paired test, thresholds.

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
        Primary metric: ``accuracy``, ``f1``, ``log_loss`` (classification), ``mae``, ``rmse``
        (regression).
    warmup
        Events before the first champion is chosen.
    every
        The policy is evaluated every `every` events (and at `warmup`).
    min_samples
        Fewest paired events a challenger comparison may use.
    margin
        Smallest improvement of the primary metric that may promote a challenger.
    alpha
        Significance level of the paired test.
    cooldown
        Events after a promotion during which no challenger is promoted.

    """

    metric: str = "accuracy"
    warmup: int = 500
    every: int = 500
    min_samples: int = 1000
    margin: float = 0.01
    alpha: float = 0.01
    cooldown: int = 2000

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

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any], task: str) -> PromotionPolicy:
        """Build the policy of a model from its ``policy`` table, defaulting the metric per task.

        >>> PromotionPolicy.from_dict({"margin": 0.5}, "regression").metric
        'mae'
        >>> PromotionPolicy.from_dict({"metric": "mae"}, "classification")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        trainers.errors.ConfigError: policy.metric 'mae' does not fit classification; ...

        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(settings) - known
        if unknown:
            raise ConfigError(f"policy: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        metric = settings.get("metric", DEFAULT_METRIC[task])
        if metric not in _METRICS_OF_TASK[task]:
            raise ConfigError(
                f"policy.metric {metric!r} does not fit {task}; "
                f"use one of {list(_METRICS_OF_TASK[task])}"
            )
        return cls(**{**settings, "metric": metric})

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

        """
        if not scores:
            return None
        # Every candidate scored the same events, so the same tail is a paired window.
        n = min(events, *(min(score.n, score.history) for score in scores.values()))
        if n == 0:
            return None
        window = [events - n + 1, events]
        summaries = {name: score.recent(n) for name, score in scores.items()}
        if champion is None:
            if events < self.warmup:
                return None
            return self._initial(window, n, summaries, preferred)
        if since_promotion < self.cooldown or n < self.min_samples:
            return None
        return self._challenger(window, n, champion, summaries, scores)

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
        window: list[int],
        n: int,
        champion: str,
        summaries: Mapping[str, dict],
        scores: Mapping[str, Scores],
    ) -> Decision | None:
        champion_summary = summaries[champion]
        if not is_complete(self.metric, champion_summary):
            return None
        champion_value = champion_summary[self.metric]
        sign = 1 if HIGHER_IS_BETTER[self.metric] else -1
        champion_losses = scores[champion].losses(n)
        paired_test = mcnemar if scores[champion].task == "classification" else wilcoxon
        qualified: dict[str, TestResult] = {}
        for name, summary in summaries.items():
            if name == champion or not is_complete(self.metric, summary):
                continue
            if sign * (summary[self.metric] - champion_value) < self.margin - _ROUNDING:
                continue
            result = paired_test(champion_losses, scores[name].losses(n))
            if result.p_value < self.alpha:
                qualified[name] = result
        if not qualified:
            return None
        values = {name: summaries[name][self.metric] for name in qualified}
        best = self._best(list(qualified), values)
        result = qualified[best]
        test_name = paired_test.__name__
        evidence = self._evidence(window, n, champion=champion, champion_metric=champion_value)
        evidence.update(
            challenger_metric=values[best],
            test=test_name,
            statistic=result.statistic,
            p_value=result.p_value,
            b=result.b,
            c=result.c,
        )
        reason = (
            f"{best!r} beat champion {champion!r} on {self.metric} over events "
            f"{window[0]}-{window[1]} ({values[best]:.4f} vs {champion_value:.4f}, "
            f"margin {self.margin}); {test_name} p={result.p_value:.3g} < alpha {self.alpha}"
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
            "alpha": self.alpha,
        }
