"""A model's specification: task, candidates, first champion, window, policy and rollouts.

`ModelSpec.from_dict` validates one ``[models.NAME]`` table of the TOML configuration (already
parsed into a dict) and raises `ConfigError` naming the model and the faulty field.
`check_label` tells whether an event's label fits a task. `candidate_digest` fingerprints a
candidate's specification, so that a checkpoint can tell whether the candidate it holds is still
the one configured; `reset_targets` checks ``--reset-candidate MODEL/NAME`` arguments against the
configuration. `parse_duration` reads durations such as ``"7d"``.

Fields and defaults
-------------------
=================  ============  ==================================================================
field              default       meaning
=================  ============  ==================================================================
``task``           (required)    ``"classification"`` or ``"regression"``
``candidates``     (required)    candidate tables (see `trainers.candidates`), names unique
``champion``       none          the first champion; none lets the policy pick the best
``window``         1000          events in the rolling metrics of reports
``policy``         see policy    the promotion policy (`trainers.policy.PromotionPolicy`); a
                                 regression model whose champion can be challenged needs
                                 ``policy.loss_scale`` (``rollout.loss_scale`` is taken if set)
``rollout``        ``direct``    how a new version reaches traffic (`RolloutSpec`, below)
``label_horizon``  ``"7d"``      how long a served prediction waits for its outcome (and an
                                 outcome for its prediction) before it expires: a number and a
                                 unit ``s``, ``m``, ``h`` or ``d``; kept in seconds
``join``           true          whether the scorer joins outcomes to its predictions for this
                                 model (and feeds the joined labeled events to the trainer)
``refresh_every``  0 (off)       every this many events, publish a ``refresh`` version of the
                                 champion when it beats its served (frozen) copy
``drift``          none (off)    drift detection and the actions it triggers
                                 (`trainers.drift.DriftSpec`)
=================  ============  ==================================================================

The ``rollout`` table:

================  =========  =====================================================================
field             default    meaning
================  =========  =====================================================================
``strategy``      direct     ``direct`` (a promotion serves at once), ``canary`` (it serves
                             ``fraction`` of the events until the guardrail rolls it out or back)
                             or ``shadow`` (it scores every event beside stable, serving none)
``fraction``      0.1        the canary's share of the events, in (0, 1)
``min_outcomes``  1000       outcomes each arm needs before a rollout
``tolerance``     0.02       how much worse (in mean loss) a trial may be and still roll out
``alpha``         0.05       the guardrail's level (false rollbacks, and rollouts of a worse trial)
``loss_scale``    none       regression: the absolute error that counts as a full loss (the
                             guardrail clips ``|error| / loss_scale`` to [0, 1]); required for a
                             regression model whose strategy is not ``direct``
================  =========  =====================================================================

Examples
--------
>>> from trainers.spec import ModelSpec, candidate_digest, check_label, reset_targets
>>> spec = ModelSpec.from_dict("sea", {
...     "task": "classification",
...     "champion": "nb",
...     "candidates": [
...         {"name": "nb", "river": "naive_bayes.GaussianNB"},
...         {"name": "hat", "river": "tree.HoeffdingAdaptiveTreeClassifier",
...          "params": {"seed": 42}},
...     ],
...     "policy": {"warmup": 200},
... })
>>> spec.window, spec.policy.metric, spec.policy.warmup, [c["name"] for c in spec.candidates]
(1000, 'accuracy', 200, ['nb', 'hat'])
>>> ModelSpec.from_dict("sea", {"task": "classification", "candidates": []})
Traceback (most recent call last):
...
trainers.errors.ConfigError: model 'sea': candidates: give at least one candidate
>>> check_label("regression", float("nan"))
'regression labels must be finite numbers, got nan'
>>> check_label("classification", "spam") is None
True
>>> candidate_digest(spec.candidates[0])[:16]
'133d0cbe7999b8ba'
>>> reset_targets(["sea/hat"], {"sea": spec})
{'sea': frozenset({'hat'})}
>>> spec.rollout.strategy, spec.label_horizon, spec.join, spec.refresh_every
('direct', 604800.0, True, 0)
>>> canary = ModelSpec.from_dict("sea", {
...     "task": "classification",
...     "candidates": [{"name": "nb", "river": "naive_bayes.GaussianNB"}],
...     "rollout": {"strategy": "canary", "fraction": 0.05},
...     "label_horizon": "30s",
...     "refresh_every": 5000,
... })
>>> canary.rollout.trial_kind, canary.rollout.trial_fraction, canary.label_horizon
('canary', 0.05, 30.0)

"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainers.actions import RESET_MARK
from trainers.candidates import TASKS, build_candidate
from trainers.drift import DriftSpec
from trainers.errors import ConfigError
from trainers.policy import PromotionPolicy

__all__ = [
    "DEFAULT_LABEL_HORIZON",
    "STRATEGIES",
    "ModelSpec",
    "RolloutSpec",
    "candidate_digest",
    "check_label",
    "parse_duration",
    "reset_targets",
]

_KEYS = {
    "task",
    "candidates",
    "champion",
    "window",
    "policy",
    "rollout",
    "label_horizon",
    "join",
    "refresh_every",
    "drift",
}

#: Rollout strategies: how a promotion reaches traffic.
STRATEGIES = ("direct", "canary", "shadow")
#: A week: long enough for most delayed labels (chargebacks take longer: configure it).
DEFAULT_LABEL_HORIZON = "7d"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _number(value: Any) -> bool:
    # bool is an int subclass, but `fraction = true` is a typo, not a number.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_duration(text: Any) -> float:
    """Seconds in a duration such as ``"7d"``, ``"30s"``, ``"2h"`` or ``"1.5m"``.

    Raises `ConfigError` for anything but a positive number followed by one unit ``s``, ``m``,
    ``h`` or ``d``.

    >>> parse_duration("7d"), parse_duration("30s"), parse_duration("1.5m")
    (604800.0, 30.0, 90.0)
    >>> parse_duration("7 days")
    Traceback (most recent call last):
    ...
    trainers.errors.ConfigError: must be a duration such as '7d', '30s' or '2h' \
(units s, m, h, d), got '7 days'

    """
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]] if match else 0.0
    if seconds <= 0:
        raise ConfigError(
            f"must be a duration such as '7d', '30s' or '2h' (units s, m, h, d), got {text!r}"
        )
    return seconds


@dataclass(frozen=True)
class RolloutSpec:
    """How a model's new versions reach traffic, and the guardrail that judges a trial.

    Parameters
    ----------
    strategy
        ``"direct"``, ``"canary"`` or ``"shadow"`` (see the module docstring).
    fraction
        The canary's share of the events, in (0, 1).
    min_outcomes
        Outcomes each arm needs before the guardrail may roll a trial out.
    tolerance
        How much worse (in mean loss, in [0, 1)) a trial may be and still roll out.
    alpha
        The guardrail's level, in (0, 1).
    loss_scale
        Regression only: the absolute error that counts as a full loss.

    Examples
    --------
    >>> RolloutSpec.from_dict({"strategy": "shadow"}, "classification").trial_fraction
    1.0
    >>> RolloutSpec.from_dict({"strategy": "canary"}, "regression")
    Traceback (most recent call last):
    ...
    trainers.errors.ConfigError: rollout.loss_scale is required for regression under the \
canary strategy (the absolute error that counts as a full loss)

    """

    strategy: str = "direct"
    fraction: float = 0.1
    min_outcomes: int = 1000
    tolerance: float = 0.02
    alpha: float = 0.05
    loss_scale: float | None = None

    @property
    def trial_kind(self) -> str | None:
        """The record kind a promotion goes out as: ``canary``, ``shadow``, or None (direct)."""
        return None if self.strategy == "direct" else self.strategy

    @property
    def trial_fraction(self) -> float:
        """The ``rollout["fraction"]`` of a trial: `fraction` for a canary, 1.0 for a shadow."""
        return 1.0 if self.strategy == "shadow" else self.fraction

    @classmethod
    def from_dict(cls, d: Any, task: str) -> RolloutSpec:
        """Validate a ``rollout`` table of a model of `task`; raise `ConfigError` on a fault."""
        if not isinstance(d, Mapping):
            raise ConfigError("rollout: must be a table/dict")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(
                f"rollout: unknown settings {sorted(unknown)}; known: {sorted(known)}"
            )
        strategy = d.get("strategy", "direct")
        if strategy not in STRATEGIES:
            raise ConfigError(
                f"rollout.strategy must be one of {list(STRATEGIES)}, got {strategy!r}"
            )
        rules = {
            "fraction": ("a number in (0, 1)", lambda v: _number(v) and 0 < v < 1),
            "min_outcomes": (
                "a positive integer",
                lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            ),
            "tolerance": ("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
            "alpha": ("a number in (0, 1)", lambda v: _number(v) and 0 < v < 1),
            "loss_scale": ("a positive number", lambda v: _number(v) and v > 0),
        }
        for name, (expected, is_valid) in rules.items():
            if name in d and not is_valid(d[name]):
                raise ConfigError(f"rollout.{name} must be {expected}, got {d[name]!r}")
        loss_scale = d.get("loss_scale")
        if loss_scale is not None and task != "regression":
            raise ConfigError("rollout.loss_scale is for regression models only")
        if loss_scale is None and task == "regression" and strategy != "direct":
            raise ConfigError(
                f"rollout.loss_scale is required for regression under the {strategy} strategy "
                "(the absolute error that counts as a full loss)"
            )
        defaults = cls()
        return cls(
            strategy=strategy,
            fraction=float(d.get("fraction", defaults.fraction)),
            min_outcomes=d.get("min_outcomes", defaults.min_outcomes),
            tolerance=float(d.get("tolerance", defaults.tolerance)),
            alpha=float(d.get("alpha", defaults.alpha)),
            loss_scale=None if loss_scale is None else float(loss_scale),
        )


@dataclass(frozen=True)
class ModelSpec:
    """A validated model specification.

    Parameters
    ----------
    name
        The model's name (the key of its ``[models.NAME]`` table).
    task
        ``"classification"`` or ``"regression"``.
    candidates
        Candidate specifications (see `trainers.candidates.build_candidate`), names unique.
    champion
        The candidate to choose as first champion after warmup; None lets the policy pick the
        best.
    window
        Events in the rolling metrics of progress reports.
    policy
        The promotion policy.
    rollout
        How promotions reach traffic (``direct`` by default).
    label_horizon
        Seconds a served prediction waits for its outcome, and an outcome for its prediction.
    join
        Whether the scorer joins outcomes to this model's predictions.
    refresh_every
        Events between checks for a ``refresh`` of the champion; 0 turns refreshes off.
    drift
        Drift detection and its actions; None turns it off.

    """

    name: str
    task: str
    candidates: tuple[dict[str, Any], ...]
    champion: str | None
    window: int
    policy: PromotionPolicy
    rollout: RolloutSpec = field(default_factory=RolloutSpec)
    label_horizon: float = parse_duration(DEFAULT_LABEL_HORIZON)
    join: bool = True
    refresh_every: int = 0
    drift: DriftSpec | None = None

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> ModelSpec:
        """Validate the table `d` of model `name`; raise `ConfigError` on the first fault."""
        try:
            return cls._from_dict(name, d)
        except ConfigError as error:
            raise ConfigError(f"model {name!r}: {error}") from None

    @classmethod
    def _from_dict(cls, name: str, d: Mapping[str, Any]) -> ModelSpec:
        if not isinstance(d, Mapping):
            raise ConfigError("the model's table must be a table/dict")
        unknown = set(d) - _KEYS
        if unknown:
            raise ConfigError(f"unknown fields {sorted(unknown)}; known: {sorted(_KEYS)}")
        task = d.get("task")
        if task not in TASKS:
            raise ConfigError(f"task: must be one of {list(TASKS)}, got {task!r}")
        candidates = d.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            raise ConfigError("candidates: give at least one candidate")
        for index, candidate in enumerate(candidates):
            if not isinstance(candidate, Mapping):
                raise ConfigError(f"candidates[{index}]: must be a table/dict")
            try:
                # Building once checks names, params and task up front, not at the first event.
                build_candidate(candidate, task)
            except ConfigError as error:
                raise ConfigError(f"candidates[{index}]: {error}") from None
        names = [candidate["name"] for candidate in candidates]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"candidates: names must be unique, repeated: {duplicates}")
        marked = [name for name in names if RESET_MARK in name]
        if marked:
            raise ConfigError(
                f"candidates: {marked}: names with {RESET_MARK!r} are those of drift reset copies"
            )
        champion = d.get("champion")
        if champion is not None and champion not in names:
            raise ConfigError(f"champion: {champion!r} is not a candidate; candidates: {names}")
        window = d.get("window", 1000)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"window: must be a positive integer, got {window!r}")
        policy = d.get("policy", {})
        if not isinstance(policy, Mapping):
            raise ConfigError("policy: must be a table/dict")
        try:
            label_horizon = parse_duration(d.get("label_horizon", DEFAULT_LABEL_HORIZON))
        except ConfigError as error:
            raise ConfigError(f"label_horizon: {error}") from None
        join = d.get("join", True)
        if not isinstance(join, bool):
            raise ConfigError(f"join: must be true or false, got {join!r}")
        refresh_every = d.get("refresh_every", 0)
        if (
            isinstance(refresh_every, bool)
            or not isinstance(refresh_every, int)
            or refresh_every < 0
        ):
            raise ConfigError(
                f"refresh_every: must be a non-negative integer (0: off), got {refresh_every!r}"
            )
        policy_spec = PromotionPolicy.from_dict(policy, task)
        rollout = RolloutSpec.from_dict(d.get("rollout", {}), task)
        if policy_spec.loss_scale is None and rollout.loss_scale is not None:
            # One error counts as a full loss for the promotions as for the guardrail.
            policy_spec = dataclasses.replace(policy_spec, loss_scale=rollout.loss_scale)
        drift = d.get("drift")
        drift_spec = (
            None
            if drift is None
            else DriftSpec.from_dict(drift, names, task=task, metric=policy_spec.metric)
        )
        challenged = (
            len(candidates) > 1
            or refresh_every > 0
            or (drift_spec is not None and "reset" in drift_spec.actions)
        )
        if task == "regression" and challenged and policy_spec.loss_scale is None:
            raise ConfigError(
                "policy.loss_scale is required for a regression model whose champion can be "
                "challenged (two candidates or more, refresh_every, or the drift reset action): "
                "the absolute error that counts as a full loss (rollout.loss_scale, when set, "
                "is taken if policy.loss_scale is not)"
            )
        return cls(
            name=name,
            task=task,
            candidates=tuple(dict(candidate) for candidate in candidates),
            champion=champion,
            window=window,
            policy=policy_spec,
            rollout=rollout,
            label_horizon=label_horizon,
            join=join,
            refresh_every=refresh_every,
            drift=drift_spec,
        )


def check_label(task: str, label: Any) -> str | None:
    """Return why `label` does not fit `task`, or None when it fits.

    Classification labels are strings, integers or booleans; regression labels are finite
    integers or floats (booleans are refused: they are almost always a mislabelled stream).
    """
    if task == "classification":
        if isinstance(label, str | int):
            return None
        return f"classification labels must be str, int or bool, got {type(label).__name__}"
    if isinstance(label, bool) or not isinstance(label, int | float):
        return f"regression labels must be int or float, got {type(label).__name__}"
    if not math.isfinite(label):
        return f"regression labels must be finite numbers, got {label!r}"
    return None


def candidate_digest(candidate: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a candidate specification's canonical JSON: its stable fingerprint.

    Key order and layout do not change the digest; anything else does, including edits that
    build the same model (``1`` for ``1.0``, a default spelled out, ``params = {}`` added), since
    telling those apart would mean knowing every estimator's defaults.

    >>> nb = {"name": "nb", "river": "naive_bayes.GaussianNB", "params": {}}
    >>> candidate_digest(nb) == candidate_digest(dict(reversed(nb.items())))
    True
    >>> candidate_digest(nb) == candidate_digest({**nb, "params": {"var_smoothing": 1}})
    False

    """
    text = json.dumps(
        candidate, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(text.encode()).hexdigest()


def reset_targets(
    arguments: Iterable[str], models: Mapping[str, ModelSpec]
) -> dict[str, frozenset[str]]:
    """Parse ``MODEL/NAME`` reset arguments into candidate names per model.

    Raises `ConfigError` for an argument that is not ``MODEL/NAME`` or names no configured
    model or candidate, so that a typo stops the worker at start, not at some later claim.

    >>> reset_targets(["sea/agile"], {})
    Traceback (most recent call last):
    ...
    trainers.errors.ConfigError: --reset-candidate sea/agile: no model 'sea'; models: []

    """
    targets: dict[str, set[str]] = {}
    for argument in arguments:
        model, _, name = argument.partition("/")
        if not model or not name:
            raise ConfigError(f"--reset-candidate {argument}: expected MODEL/NAME")
        spec = models.get(model)
        if spec is None:
            raise ConfigError(
                f"--reset-candidate {argument}: no model {model!r}; models: {sorted(models)}"
            )
        names = [candidate["name"] for candidate in spec.candidates]
        if name not in names:
            raise ConfigError(
                f"--reset-candidate {argument}: model {model!r} has no candidate {name!r}; "
                f"candidates: {names}"
            )
        targets.setdefault(model, set()).add(name)
    return {model: frozenset(names) for model, names in targets.items()}
