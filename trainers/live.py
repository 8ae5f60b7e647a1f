"""Live metrics of the versions a model serves, and the rollout decisions they lead to.

The scoring worker joins each outcome to the prediction it served and hands the pair to the
model's `LiveBoard`, which

1. scores it prequentially (`trainers.metrics.PrequentialScore`: the trainer's metric
   definitions, rolling and cumulative) under the (version, arm) that served it: ``stable``,
   ``canary``, or ``shadow`` (a version on trial that scores every event and serves none, so each
   outcome scores both the stable and the shadow prediction: paired outcomes);
2. feeds the trial's guardrail (`trainers.guardrail.CanaryGuardrail`, anytime-valid), which says
   ``rollout`` or ``rollback`` once, with its evidence;
3. feeds the stable version's own monitor (`trainers.guardrail.StableMonitor`), which says
   ``alert`` once when its live loss rises significantly above its level.

The board is pure and deterministic: the same joins in the same order give the same metrics and
decisions, which is what lets the worker restore it from a snapshot and replay the joins after
it. It pickles.

Parameters
----------
spec
    The model's specification: its task, window, and ``rollout`` settings (alpha, tolerance,
    min_outcomes, loss scale).

Examples
--------
>>> from trainers.live import LiveBoard
>>> from trainers.spec import ModelSpec
>>> spec = ModelSpec.from_dict("sea", {
...     "task": "classification", "window": 100,
...     "candidates": [{"name": "lr", "river": "LogisticRegression"}],
...     "rollout": {"strategy": "canary", "fraction": 0.5, "min_outcomes": 50},
... })
>>> board = LiveBoard(spec)
>>> board.serve(stable=1, trial=2, trial_arm="canary")
>>> decisions = []
>>> for i in range(400):
...     decisions += board.joined(version=1, arm="stable", label=True, prediction=True)
...     decisions += board.joined(version=2, arm="canary", label=True, prediction=i % 2 == 0)
>>> [(d.kind, d.evidence["trial_version"]) for d in decisions]
[('rollback', 2)]
>>> sorted(board.report())
[(1, 'stable'), (2, 'canary')]
>>> board.report()[(2, "canary")]["cumulative"]["accuracy"]
0.5

"""

from __future__ import annotations

from typing import Any

from trainers.guardrail import ALERT, CONTINUE, CanaryGuardrail, GuardDecision, StableMonitor
from trainers.metrics import PrequentialScore
from trainers.spec import ModelSpec

__all__ = ["ARMS", "LiveBoard"]

ARMS = ("stable", "canary", "shadow")
"""How a version serves: to every event not on trial, to a hashed fraction of them, or beside."""


class LiveBoard:
    """One model's live scores per (version, arm), its trial guardrail and its stable monitor."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.scores: dict[tuple[int, str], PrequentialScore] = {}
        self.stable: int | None = None
        self.trial: int | None = None
        self.trial_arm: str | None = None
        self._guardrail: CanaryGuardrail | None = None
        self._monitor: StableMonitor | None = None
        self._decided: set[tuple[str, int]] = set()

    def serve(
        self,
        *,
        stable: int,
        trial: int | None = None,
        trial_arm: str | None = None,
        reference: float | None = None,
    ) -> None:
        """What serves now: ``stable``, and ``trial`` on ``trial_arm`` beside it (or nothing).

        A new trial starts a fresh guardrail; a new stable version a fresh monitor, against
        ``reference`` (its level at promotion, in metric units) or, without one, the level
        measured on its first outcomes.
        """
        rollout = self.spec.rollout
        if trial != self.trial or trial_arm != self.trial_arm:
            self.trial, self.trial_arm = trial, trial_arm
            self._guardrail = (
                None
                if trial is None or not self._losses_bounded()
                else CanaryGuardrail(
                    self.spec.task,
                    alpha=rollout.alpha,
                    tolerance=rollout.tolerance,
                    min_outcomes=rollout.min_outcomes,
                    scale=rollout.loss_scale,
                )
            )
        if stable != self.stable:
            self.stable = stable
            self._monitor = (
                None
                if not self._losses_bounded()
                else StableMonitor(
                    self.spec.task,
                    reference=reference,
                    tolerance=rollout.tolerance,
                    alpha=rollout.alpha,
                    scale=rollout.loss_scale,
                )
            )

    def _losses_bounded(self) -> bool:
        # Regression errors become losses in [0, 1] only through a configured scale.
        return self.spec.task == "classification" or self.spec.rollout.loss_scale is not None

    def joined(
        self,
        *,
        version: int,
        arm: str,
        label: Any,
        prediction: Any,
        probabilities: dict[Any, float] | None = None,
    ) -> list[GuardDecision]:
        """Score one joined outcome; the decisions it completes (each given once)."""
        score = self.scores.get((version, arm))
        if score is None:
            score = self.scores[(version, arm)] = PrequentialScore(self.spec.task, self.spec.window)
        score.update(label, prediction, probabilities)
        decisions = []
        guarded_arm = self._trial_arm_of(version, arm)
        if self._guardrail is not None and guarded_arm is not None:
            self._guardrail.update(guarded_arm, label, prediction)
            decisions.append(self._once(self._guardrail.decide(), self.trial))
        if self._monitor is not None and version == self.stable and arm == "stable":
            self._monitor.update(label, prediction)
            decisions.append(self._once(self._monitor.decide(), self.stable))
        return [decision for decision in decisions if decision is not None]

    def _trial_arm_of(self, version: int, arm: str) -> str | None:
        """The guardrail arm of an outcome: ``canary`` for the trial's, ``stable`` for stable's."""
        if arm == "stable" and version == self.stable:
            return "stable"
        if version == self.trial and arm == self.trial_arm:
            return "canary"
        return None

    def _once(self, decision: GuardDecision, version: int | None) -> GuardDecision | None:
        if decision.kind == CONTINUE or version is None:
            return None
        if (decision.kind, version) in self._decided:
            return None
        self._decided.add((decision.kind, version))
        evidence = {**decision.evidence, "stable_version": self.stable}
        if decision.kind != ALERT:
            evidence.update(trial_version=self.trial, trial_arm=self.trial_arm)
        return GuardDecision(decision.kind, decision.reason, evidence)

    def report(self) -> dict[tuple[int, str], dict[str, Any]]:
        """Per (version, arm): outcomes joined, rolling and cumulative metrics."""
        return {
            key: {"joined": score.n, "rolling": score.rolling(), "cumulative": score.cumulative()}
            for key, score in self.scores.items()
        }
