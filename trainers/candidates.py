"""Candidate models behind one interface, built from a JSON-like specification.

A *candidate* is one online model competing to become a model's champion. Two backends share the
`Candidate` interface:

* `RiverCandidate` wraps a river estimator or pipeline, which learns one event at a time. A
  feature whose value is `None` is missing, as in the event contract, and left out of the dict
  the model sees (river's numeric steps would raise on it).
* `SklearnCandidate` wraps a scikit-learn estimator that has `partial_fit`. Events are buffered
  and fitted in mini-batches of `batch_size`. Feature dicts are turned into vectors with
  `sklearn.feature_extraction.FeatureHasher` (`n_features` columns, default 2**8,
  `alternate_sign=False` so that non-negative features stay non-negative for the naive Bayes
  models): a string value `v` of feature `name` becomes the indicator `"name=v"`, a number (or
  bool) is used as it is, and `None` means missing and is dropped. Hashing needs no vocabulary,
  so the vectorisation is deterministic and identical across processes and restarts. A
  mini-batch whose `partial_fit` raises is discarded with the error, so that it cannot fail
  again with every later event (the trainer quarantines the candidate, see `trainers.trainer`).

The scikit-learn allowlist holds the estimators that learn from these hashed vectors, which are
sparse and whose columns are absent when an event lacks the feature:

* ``SGDClassifier``, ``Perceptron``, ``PassiveAggressiveClassifier``, ``BernoulliNB``,
  ``SGDRegressor``, ``PassiveAggressiveRegressor`` take any numeric values. (scikit-learn 1.8
  deprecated the two PassiveAggressive estimators, to be removed in 1.10; ``SGDClassifier`` with
  ``loss="hinge", penalty=None, learning_rate="pa1", eta0=1.0`` is the replacement.)
* ``MultinomialNB`` takes counts and indicators only: a negative value raises, and the trainer
  quarantines the candidate.
* ``GaussianNB`` is *not* allowed: its `partial_fit` refuses sparse input, so it failed on the
  first mini-batch of every stream; and a feature missing from an event would be read as 0, not
  as missing. River's ``naive_bayes.GaussianNB`` learns from dicts and is the one to use.

`build_candidate(spec, task)` turns a specification (from the TOML configuration) into a
candidate. Class names are looked up in whitelists, never evaluated:

* ``{"name": "hat", "river": "tree.HoeffdingAdaptiveTreeClassifier", "params": {"seed": 42}}``
* ``{"name": "lr", "river": "StandardScaler | LogisticRegression",
  "params": {"LogisticRegression": {"l2": 0.001, "optimizer": {"SGD": 0.05}}}}``: a pipeline,
  whose steps are ``module.Class`` or bare class names and whose params are keyed by step class.
  A parameter given as a one-key dict naming a `river.optim` class, e.g. ``{"SGD": 0.05}`` or
  ``{"Adam": {"lr": 0.01}}``, is built as that optimizer.
* ``{"name": "sgd", "sklearn": "SGDClassifier", "params": {"loss": "log_loss"},
  "batch_size": 100, "n_features": 256, "classes": [false, true]}``: `classes` is required for
  classifiers, because `partial_fit` must know every class up front.

Examples
--------
>>> from trainers.candidates import build_candidate
>>> lr = build_candidate(
...     {"name": "lr", "river": "StandardScaler | LogisticRegression",
...      "params": {"LogisticRegression": {"l2": 0.001}}},
...     task="classification",
... )
>>> lr.predict_proba_one({"x": 1.0}) is None  # nothing learned yet
True
>>> for i in range(50):
...     lr.learn_one({"x": float(i % 10)}, i % 10 >= 5)
>>> lr.predict_one({"x": 9.0}), lr.predict_one({"x": 0.0})
(True, False)

>>> sgd = build_candidate(
...     {"name": "sgd", "sklearn": "SGDRegressor", "params": {"random_state": 0},
...      "batch_size": 2},
...     task="regression",
... )
>>> sgd.learn_one({"x": 1.0}, 2.0)
>>> sgd.predict_one({"x": 1.0}) is None  # the first mini-batch is not full yet
True
>>> sgd.learn_one({"x": 2.0}, 4.0)
>>> isinstance(sgd.predict_one({"x": 1.0}), float)
True

>>> build_candidate({"name": "x", "river": "tree.NoSuchTree"}, task="classification")
Traceback (most recent call last):
...
trainers.errors.ConfigError: candidate 'x': tree has no estimator 'NoSuchTree'

References
----------
[^1]: Montiel, J. et al., 2021. River: machine learning for streaming data in Python. Journal
    of Machine Learning Research, 22(110), pp. 1-8.
[^2]: scikit-learn user guide, "Strategies to scale computationally: incremental learning"
    (estimators with `partial_fit`).

"""

from __future__ import annotations

import abc
import copy
import functools
import importlib
import inspect
import math
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar, TypeGuard

import numpy as np
from river import base as river_base
from river import compose, optim
from sklearn.feature_extraction import FeatureHasher

from trainers.errors import ConfigError, LabelError

__all__ = [
    "RIVER_MODULES",
    "SKLEARN_ESTIMATORS",
    "TASKS",
    "Candidate",
    "RiverCandidate",
    "SklearnCandidate",
    "build_candidate",
]

TASKS = ("classification", "regression")

#: River modules whose estimators and transformers a specification may name.
RIVER_MODULES = (
    "preprocessing",
    "linear_model",
    "tree",
    "forest",
    "naive_bayes",
    "neighbors",
    "ensemble",
)

#: scikit-learn estimators with `partial_fit` that learn from hashed sparse vectors, by name:
#: (module, task). See the module docstring for what each one accepts and why GaussianNB is absent.
SKLEARN_ESTIMATORS: Mapping[str, tuple[str, str]] = {
    "SGDClassifier": ("sklearn.linear_model", "classification"),
    "Perceptron": ("sklearn.linear_model", "classification"),
    "PassiveAggressiveClassifier": ("sklearn.linear_model", "classification"),
    "MultinomialNB": ("sklearn.naive_bayes", "classification"),
    "BernoulliNB": ("sklearn.naive_bayes", "classification"),
    "SGDRegressor": ("sklearn.linear_model", "regression"),
    "PassiveAggressiveRegressor": ("sklearn.linear_model", "regression"),
}

_JSON_SCALARS = (str, int, float, bool, type(None))


class Candidate(abc.ABC):
    """One online model competing for a champion slot.

    Parameters
    ----------
    name
        The candidate's name, unique within its model.
    params
        The JSON-serialisable specification the candidate was built from.

    """

    #: Classes the candidate can learn, when it must know them up front; None means any label.
    classes: tuple[Hashable, ...] | None = None

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        self.name = name
        self.params = params

    @abc.abstractmethod
    def predict_one(self, x: dict) -> Any:
        """Return the predicted label or value, or None when the model cannot predict yet."""

    @abc.abstractmethod
    def predict_proba_one(self, x: dict) -> dict[Hashable, float] | None:
        """Return class probabilities, or None for regressors and models with nothing learned."""

    @abc.abstractmethod
    def learn_one(self, x: dict, y: Any) -> None:
        """Update the model with one labelled event."""

    def predict_with_proba(self, x: dict) -> tuple[Any, dict[Hashable, float] | None]:
        """Return `(predict_one(x), predict_proba_one(x))`; backends may share the work."""
        return self.predict_one(x), self.predict_proba_one(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, params={self.params!r})"


class RiverCandidate(Candidate):
    """A candidate backed by a river estimator or pipeline.

    Parameters
    ----------
    name
        The candidate's name.
    params
        The specification it was built from.
    model
        A river classifier or regressor, or a pipeline ending in one.

    """

    def __init__(self, name: str, params: dict[str, Any], model: river_base.Estimator) -> None:
        super().__init__(name, params)
        # Any: river's base class declares none of predict_one, predict_proba_one, learn_one.
        self.model: Any = model
        self.n_learned = 0
        final = list(model.steps.values())[-1] if isinstance(model, compose.Pipeline) else model
        self._is_classifier = isinstance(final, river_base.Classifier)
        # Most river classifiers predict the arg-max of their probabilities; for those, one
        # predict_proba_one call gives both answers and halves the per-event prediction cost.
        self._label_from_proba = (
            self._is_classifier
            and getattr(type(final), "predict_one", None) is river_base.Classifier.predict_one
        )

    def predict_one(self, x: dict) -> Any:
        if self.n_learned == 0:
            return None
        return self.model.predict_one(_present(x))

    def predict_proba_one(self, x: dict) -> dict[Hashable, float] | None:
        if self.n_learned == 0 or not self._is_classifier:
            return None
        return self.model.predict_proba_one(_present(x)) or None

    def predict_with_proba(self, x: dict) -> tuple[Any, dict[Hashable, float] | None]:
        if not self._label_from_proba:
            return super().predict_with_proba(x)
        proba = self.predict_proba_one(x)
        if not proba:
            return None, None
        return max(proba, key=proba.__getitem__), proba

    def learn_one(self, x: dict, y: Any) -> None:
        self.model.learn_one(_present(x), y)
        self.n_learned += 1


def _present(x: dict) -> dict:
    """`x` without its missing (None) features; `x` itself when none is missing."""
    return x if None not in x.values() else {k: v for k, v in x.items() if v is not None}


class SklearnCandidate(Candidate):
    """A candidate backed by a scikit-learn estimator fitted with `partial_fit` in mini-batches.

    Parameters
    ----------
    name
        The candidate's name.
    params
        The specification it was built from.
    estimator
        An unfitted scikit-learn estimator with `partial_fit`.
    batch_size
        Events buffered before each `partial_fit` call.
    n_features
        Width of the hashed feature vectors.
    classes
        Every class a classifier may see; None for regressors.

    """

    def __init__(
        self,
        name: str,
        params: dict[str, Any],
        estimator: Any,
        *,
        batch_size: int = 100,
        n_features: int = 2**8,
        classes: tuple[Hashable, ...] | None = None,
    ) -> None:
        super().__init__(name, params)
        self.estimator = estimator
        self.batch_size = batch_size
        self.classes = classes
        self.n_fitted = 0
        self._hasher = FeatureHasher(n_features=n_features, alternate_sign=False)
        self._class_set = frozenset(classes) if classes is not None else None
        self._pending_x: list[dict] = []
        self._pending_y: list[Any] = []

    def _vectorise(self, rows: list[dict]) -> Any:
        return self._hasher.transform(
            {str(k): v for k, v in row.items() if v is not None} for row in rows
        )

    def predict_one(self, x: dict) -> Any:
        if self.n_fitted == 0:
            return None
        return self.estimator.predict(self._vectorise([x])).tolist()[0]

    def predict_proba_one(self, x: dict) -> dict[Hashable, float] | None:
        if self.n_fitted == 0 or not hasattr(self.estimator, "predict_proba"):
            return None
        proba = self.estimator.predict_proba(self._vectorise([x]))[0]
        return dict(zip(self.estimator.classes_.tolist(), proba.tolist(), strict=True))

    def learn_one(self, x: dict, y: Any) -> None:
        if self._class_set is not None and y not in self._class_set:
            raise LabelError(
                f"candidate {self.name!r}: label {y!r} is not one of the declared classes "
                f"{list(self.classes or ())}"
            )
        # A copy: the caller may reuse its dict before the batch is fitted.
        self._pending_x.append(dict(x))
        self._pending_y.append(y)
        if len(self._pending_y) >= self.batch_size:
            self._fit_pending()

    @property
    def n_pending(self) -> int:
        """Events buffered for the next mini-batch."""
        return len(self._pending_y)

    def _fit_pending(self) -> None:
        # Taken out of the buffer before fitting: a batch that fails must not be retried with
        # every later event.
        rows, labels = self._pending_x, np.asarray(self._pending_y)
        self._pending_x, self._pending_y = [], []
        features = self._vectorise(rows)
        if self.n_fitted == 0 and self.classes is not None:
            self.estimator.partial_fit(features, labels, classes=np.asarray(self.classes))
        else:
            self.estimator.partial_fit(features, labels)
        self.n_fitted += len(labels)


class _Builder:
    """Turns one candidate specification into a candidate; each method checks one field."""

    ALLOWED_KEYS: ClassVar[dict[str, set[str]]] = {
        "river": {"name", "river", "params"},
        "sklearn": {"name", "sklearn", "params", "batch_size", "n_features", "classes"},
    }

    def __init__(self, spec: Mapping[str, Any], task: str) -> None:
        self.spec = spec
        self.task = task
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"candidate {spec!r}: 'name' must be a non-empty string")
        self.name: str = name

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"candidate {self.name!r}: {message}")

    def build(self) -> Candidate:
        if self.task not in TASKS:
            raise self.fail(f"task must be one of {list(TASKS)}, got {self.task!r}")
        backends = [key for key in ("river", "sklearn") if key in self.spec]
        if len(backends) != 1:
            raise self.fail("give exactly one of 'river' or 'sklearn'")
        backend = backends[0]
        unknown = set(self.spec) - self.ALLOWED_KEYS[backend]
        if unknown:
            raise self.fail(
                f"unknown keys {sorted(unknown)}; allowed: {sorted(self.ALLOWED_KEYS[backend])}"
            )
        params = self.spec.get("params", {})
        if not isinstance(params, dict):
            raise self.fail("'params' must be a table/dict")
        self.check_json("params", params)
        # The candidate keeps its own copy, so later edits to the caller's dict change nothing.
        description = copy.deepcopy(dict(self.spec))
        if backend == "river":
            return RiverCandidate(self.name, description, self.river_model(params))
        return self.sklearn_candidate(description, params)

    def check_json(self, path: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise self.fail(f"{path}: keys must be strings, got {key!r}")
                self.check_json(f"{path}.{key}", item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.check_json(f"{path}[{index}]", item)
        elif not isinstance(value, _JSON_SCALARS) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise self.fail(f"{path}: {value!r} is not a finite JSON scalar, list or table")

    # -- river -----------------------------------------------------------------------------

    def river_model(self, params: dict[str, Any]) -> river_base.Estimator:
        text = self.spec["river"]
        if not isinstance(text, str) or not text.strip():
            raise self.fail("'river' must name an estimator, e.g. 'tree.HoeffdingTreeClassifier'")
        classes = [self.river_class(step.strip()) for step in text.split("|")]
        if len(classes) == 1:
            steps = [self.instantiate(classes[0], params)]
        else:
            names = {cls.__name__ for cls in classes}
            unknown = set(params) - names
            if unknown:
                raise self.fail(
                    f"pipeline params must be keyed by step class; unknown steps "
                    f"{sorted(unknown)}, steps are {sorted(names)}"
                )
            steps = [self.instantiate(cls, params.get(cls.__name__, {})) for cls in classes]
        for step in steps[:-1]:
            if not isinstance(step, river_base.Transformer):
                raise self.fail(f"pipeline step {type(step).__name__} is not a transformer")
        self.check_task(steps[-1])
        return functools.reduce(lambda left, right: left | right, steps)

    def river_class(self, step: str) -> type:
        module_name, _, class_name = step.rpartition(".")
        if module_name:
            if module_name not in RIVER_MODULES:
                raise self.fail(
                    f"river module {module_name!r} is not allowed; allowed: {list(RIVER_MODULES)}"
                )
            found = getattr(importlib.import_module(f"river.{module_name}"), class_name, None)
            if not _is_river_estimator(found):
                raise self.fail(f"{module_name} has no estimator {class_name!r}")
            return found
        found_in = [
            getattr(importlib.import_module(f"river.{module}"), class_name, None)
            for module in RIVER_MODULES
        ]
        matches = [cls for cls in found_in if _is_river_estimator(cls)]
        if not matches:
            raise self.fail(
                f"no estimator {class_name!r} in river modules {list(RIVER_MODULES)}; "
                "write it as 'module.Class'"
            )
        return matches[0]

    def instantiate(self, cls: type, params: Any) -> Any:
        if not isinstance(params, dict):
            raise self.fail(f"params of {cls.__name__} must be a table/dict")
        try:
            return cls(**{key: _river_param(value) for key, value in params.items()})
        except (TypeError, ValueError) as error:
            allowed = [
                p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")
            ]
            raise self.fail(
                f"bad params for {cls.__name__} ({error}); allowed: {allowed}"
            ) from error

    def check_task(self, estimator: Any) -> None:
        wanted = river_base.Classifier if self.task == "classification" else river_base.Regressor
        if not isinstance(estimator, wanted):
            raise self.fail(
                f"{type(estimator).__name__} is not a {wanted.__name__.lower()}, "
                f"but the model's task is {self.task}"
            )

    # -- scikit-learn ----------------------------------------------------------------------

    def sklearn_candidate(self, description: dict, params: dict[str, Any]) -> SklearnCandidate:
        class_name = self.spec["sklearn"]
        if class_name not in SKLEARN_ESTIMATORS:
            raise self.fail(
                f"scikit-learn estimator {class_name!r} is not allowed; "
                f"allowed: {sorted(SKLEARN_ESTIMATORS)}"
            )
        module_name, estimator_task = SKLEARN_ESTIMATORS[class_name]
        if estimator_task != self.task:
            raise self.fail(
                f"{class_name} is for {estimator_task}, but the model's task is {self.task}"
            )
        cls = getattr(importlib.import_module(module_name), class_name)
        try:
            estimator = cls(**params)
        except TypeError as error:
            allowed = sorted(cls().get_params())
            raise self.fail(f"bad params for {class_name} ({error}); allowed: {allowed}") from error
        try:
            estimator._validate_params()
        except ValueError as error:
            raise self.fail(f"bad params for {class_name}: {error}") from error
        return SklearnCandidate(
            self.name,
            description,
            estimator,
            batch_size=self.positive_int("batch_size", 100),
            n_features=self.positive_int("n_features", 2**8),
            classes=self.classes(),
        )

    def positive_int(self, key: str, default: int) -> int:
        value = self.spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(f"{key!r} must be a positive integer, got {value!r}")
        return value

    def classes(self) -> tuple[Hashable, ...] | None:
        classes = self.spec.get("classes")
        if self.task == "regression":
            if classes is not None:
                raise self.fail("'classes' is only for classification")
            return None
        if (
            not isinstance(classes, list)
            or len(classes) < 2
            or not all(isinstance(c, str | int) for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise self.fail(
                "scikit-learn classifiers need 'classes': a list of at least two distinct "
                "labels (strings, integers or booleans) declared up front"
            )
        return tuple(classes)


def _is_river_estimator(obj: Any) -> TypeGuard[type[river_base.Estimator]]:
    return isinstance(obj, type) and issubclass(obj, river_base.Estimator)


def _river_param(value: Any) -> Any:
    """Build a `river.optim` optimizer from ``{"SGD": 0.05}``; leave other values alone."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, argument),) = value.items()
        optimizer = getattr(optim, key, None)
        if isinstance(optimizer, type) and issubclass(optimizer, optim.base.Optimizer):
            return optimizer(**argument) if isinstance(argument, dict) else optimizer(argument)
    return value


def build_candidate(spec: Mapping[str, Any], task: str) -> Candidate:
    """Build a candidate from its specification; raise `ConfigError` when it is invalid.

    Parameters
    ----------
    spec
        The candidate's specification (see the module docstring for its forms).
    task
        ``"classification"`` or ``"regression"``; the estimator must fit it.

    """
    return _Builder(spec, task).build()
