"""A model's specification: its task, candidates, first champion, window and promotion policy.

`ModelSpec.from_dict` validates one ``[models.NAME]`` table of the TOML configuration (already
parsed into a dict) and raises `ConfigError` naming the model and the faulty field.
`check_label` tells whether an event's label fits a task. `candidate_digest` fingerprints a
candidate's specification, so that a checkpoint can tell whether the candidate it holds is still
the one configured; `reset_targets` checks ``--reset-candidate MODEL/NAME`` arguments against the
configuration.

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

"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from trainers.candidates import TASKS, build_candidate
from trainers.errors import ConfigError
from trainers.policy import PromotionPolicy

__all__ = ["ModelSpec", "candidate_digest", "check_label", "reset_targets"]

_KEYS = {"task", "candidates", "champion", "window", "policy"}


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

    """

    name: str
    task: str
    candidates: tuple[dict[str, Any], ...]
    champion: str | None
    window: int
    policy: PromotionPolicy

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
        champion = d.get("champion")
        if champion is not None and champion not in names:
            raise ConfigError(f"champion: {champion!r} is not a candidate; candidates: {names}")
        window = d.get("window", 1000)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"window: must be a positive integer, got {window!r}")
        policy = d.get("policy", {})
        if not isinstance(policy, Mapping):
            raise ConfigError("policy: must be a table/dict")
        return cls(
            name=name,
            task=task,
            candidates=tuple(dict(candidate) for candidate in candidates),
            champion=champion,
            window=window,
            policy=PromotionPolicy.from_dict(policy, task),
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
