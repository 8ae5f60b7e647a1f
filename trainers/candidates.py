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

* `SklearnWindowCandidate` wraps a scikit-learn estimator that has `fit` (a batch learner,
  e.g. ``HistGradientBoostingClassifier``): it keeps the last `window_events` events and refits
  a fresh clone on them every `refit_every` events (and on a drift action), through an immutable
  `RefitJob` whose result is installed exactly `refit_lag` events after the job was cut, so that
  a worker can fit it in a thread pool without the model depending on how fast that was. Its
  features are hashed as above, densified for the fit (absent features are 0); estimators that
  take a ``random_state`` get ``random_state=0`` unless the specification sets one, so that
  every refit is reproducible. Its allowlist is `SKLEARN_WINDOW_ESTIMATORS`.

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
* ``{"name": "hgb", "sklearn_window": "HistGradientBoostingClassifier",
  "params": {"max_iter": 50}, "window_events": 2000, "refit_every": 1000, "refit_lag": 200}``:
  defaults ``window_events`` 1000, ``refit_every`` 500, ``refit_lag`` 0, ``n_features`` 256.

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
[^3]: Gama, J., Žliobaitė, I., Bifet, A., Pechenizkiy, M. and Bouchachia, A., 2014. A survey
    on concept drift adaptation. ACM Computing Surveys, 46(4), 44 (sliding-window retraining).

"""

from __future__ import annotations

import abc
import copy
import functools
import importlib
import inspect
import math
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeGuard

import numpy as np
from river import base as river_base
from river import compose, optim
from sklearn import base as sklearn_base
from sklearn.feature_extraction import FeatureHasher
from threadpoolctl import ThreadpoolController

from trainers.errors import ConfigError, LabelError

__all__ = [
    "RIVER_MODULES",
    "SKLEARN_ESTIMATORS",
    "SKLEARN_WINDOW_ESTIMATORS",
    "TASKS",
    "Candidate",
    "RefitJob",
    "RiverCandidate",
    "SklearnCandidate",
    "SklearnWindowCandidate",
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

#: scikit-learn estimators refitted with `fit` on a window of dense hashed vectors
#: (`SklearnWindowCandidate`), by name: (module, task).
SKLEARN_WINDOW_ESTIMATORS: Mapping[str, tuple[str, str]] = {
    "LogisticRegression": ("sklearn.linear_model", "classification"),
    "HistGradientBoostingClassifier": ("sklearn.ensemble", "classification"),
    "RandomForestClassifier": ("sklearn.ensemble", "classification"),
    "ExtraTreesClassifier": ("sklearn.ensemble", "classification"),
    "DecisionTreeClassifier": ("sklearn.tree", "classification"),
    "Ridge": ("sklearn.linear_model", "regression"),
    "HistGradientBoostingRegressor": ("sklearn.ensemble", "regression"),
    "RandomForestRegressor": ("sklearn.ensemble", "regression"),
    "ExtraTreesRegressor": ("sklearn.ensemble", "regression"),
    "DecisionTreeRegressor": ("sklearn.tree", "regression"),
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
        self._hasher = _feature_hasher(n_features)
        self._class_set = frozenset(classes) if classes is not None else None
        self._pending_x: list[dict] = []
        self._pending_y: list[Any] = []

    def _vectorise(self, rows: list[dict]) -> Any:
        return _hashed(self._hasher, rows)

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


def _feature_hasher(n_features: int) -> FeatureHasher:
    # alternate_sign=False: non-negative features stay non-negative (naive Bayes needs it).
    return FeatureHasher(n_features=n_features, alternate_sign=False)


def _hashed(hasher: FeatureHasher, rows: Iterable[dict]) -> Any:
    """Sparse hashed vectors of `rows`: ``"name=v"`` indicators for strings, None dropped."""
    return hasher.transform({str(k): v for k, v in row.items() if v is not None} for row in rows)


@dataclass(frozen=True, eq=False)
class RefitJob:
    """One refit of a `SklearnWindowCandidate`: what to fit, and when its result is installed.

    A job is immutable and its `fit` is a pure function of it, so that it can run in another
    thread (or process) while the candidate goes on learning, and give the same model wherever
    and whenever it runs: the trainer installs the result at a fixed event, not when it is ready.

    Parameters
    ----------
    candidate
        The name of the candidate it refits.
    cut
        Events the candidate had learned when the job was cut: it fits on the last
        ``len(labels)`` of them.
    due
        Events the candidate will have learned when the result is installed (``cut +
        refit_lag``); from the next event on, the candidate predicts with it.
    estimator
        The unfitted estimator (with a fixed ``random_state``), cloned by `fit`.
    rows
        The window's feature dicts, oldest first.
    labels
        Their labels.
    n_features
        Width of the hashed feature vectors.

    """

    candidate: str
    cut: int
    due: int
    estimator: Any
    rows: tuple[dict, ...]
    labels: tuple[Any, ...]
    n_features: int

    def fit(self) -> Any:
        """A fresh clone of the estimator fitted on the window (dense hashed features)."""
        estimator = sklearn_base.clone(self.estimator)
        features = _hashed(_feature_hasher(self.n_features), self.rows).toarray()
        with _one_thread():
            estimator.fit(features, np.asarray(self.labels))
        return estimator


@functools.cache
def _thread_pools() -> ThreadpoolController:
    # Built at the first fit or prediction, once the estimators' native libraries are loaded.
    return ThreadpoolController()


def _one_thread() -> Any:
    """Limit OpenMP and BLAS to one thread: a worker's event loop shares the machine with the
    fits, and OpenMP threads spinning on busy cores made a 300-event gradient-boosting fit take
    12 s instead of 0.6 s (and each prediction 14 ms instead of 1.5 ms)."""
    return _thread_pools().limit(limits=1)


class SklearnWindowCandidate(Candidate):
    """A scikit-learn estimator refitted with `fit` on the last `window_events` events.

    Every `refit_every` events learned (and on `request_refit`, a drift action) the candidate
    cuts a `RefitJob` holding a copy of its window, and installs the job's fitted model exactly
    `refit_lag` events later. Until its first model is installed it predicts nothing (None, which
    the prequential score counts as an error, so that it cannot win before it has a model);
    afterwards it predicts with the last model installed, and is scored like any candidate.

    The result is installed at a fixed event whatever the fit's speed, so the candidate's
    predictions are a pure function of the events it learned: a worker may fit a job in a
    thread pool as soon as it is cut (`pending_refits`) and hand the result in with `provide`
    before the due event; a job with no result provided is fitted inline at its due event, with
    the same outcome. The pending jobs are part of the pickled state (the results provided are
    not), so that a candidate restored from a snapshot taken mid-job refits the same window and
    installs the same model at the same event.

    A classifier's window with a single class is not refitted (no job is cut): scikit-learn's
    classifiers refuse it.

    Parameters
    ----------
    name
        The candidate's name.
    params
        The specification it was built from.
    estimator
        An unfitted scikit-learn estimator with `fit` and a fixed ``random_state`` where it
        takes one.
    window_events
        Events the window keeps (the most recent ones).
    refit_every
        Events between two scheduled refits.
    refit_lag
        Events between cutting a job and installing its result (0: at once, fitted inline).
    n_features
        Width of the hashed feature vectors.
    is_classifier
        Whether the estimator is a classifier.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> window = SklearnWindowCandidate(
    ...     "lr", {}, LogisticRegression(), window_events=100, refit_every=50, refit_lag=10,
    ...     is_classifier=True,
    ... )
    >>> for i in range(50):
    ...     window.learn_one({"x": float(i % 10)}, i % 10 >= 5)
    >>> [(job.cut, job.due) for job in window.pending_refits], window.predict_one({"x": 9.0})
    ([(50, 60)], None)
    >>> for i in range(10):
    ...     window.learn_one({"x": float(i % 10)}, i % 10 >= 5)
    >>> window.pending_refits, window.n_refits, window.predict_one({"x": 9.0})
    ((), 1, True)

    """

    def __init__(
        self,
        name: str,
        params: dict[str, Any],
        estimator: Any,
        *,
        window_events: int,
        refit_every: int,
        refit_lag: int = 0,
        n_features: int = 2**8,
        is_classifier: bool,
    ) -> None:
        super().__init__(name, params)
        self.estimator = estimator
        self.refit_every = refit_every
        self.refit_lag = refit_lag
        self.n_features = n_features
        self.n_learned = 0
        #: Refits installed so far.
        self.n_refits = 0
        self._is_classifier = is_classifier
        self._hasher = _feature_hasher(n_features)
        self._rows: deque[dict] = deque(maxlen=window_events)
        self._labels: deque[Any] = deque(maxlen=window_events)
        self._model: Any = None
        self._jobs: deque[RefitJob] = deque()
        # Results fitted elsewhere, by job; not pickled: a restored candidate fits again.
        self._provided: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_provided": {}}

    @property
    def pending_refits(self) -> tuple[RefitJob, ...]:
        """The jobs cut and not installed yet, oldest first."""
        return tuple(self._jobs)

    def provide(self, job: RefitJob, fitted: Any) -> None:
        """Hand in `job.fit()` computed elsewhere; it is installed at the job's due event.

        Raises `ValueError` for a job that is not pending here (installed or another's).
        """
        if not any(pending is job for pending in self._jobs):
            raise ValueError(f"candidate {self.name!r}: refit job {job.cut} is not pending")
        self._provided[id(job)] = fitted

    def request_refit(self) -> RefitJob | None:
        """Cut a refit job of the window now (a drift action); None when there is nothing to fit
        or a job was already cut at this event."""
        if self._jobs and self._jobs[-1].cut == self.n_learned:
            return None
        return self._cut()

    def predict_one(self, x: dict) -> Any:
        if self._model is None:
            return None
        with _one_thread():
            return self._model.predict(self._features(x)).tolist()[0]

    def predict_proba_one(self, x: dict) -> dict[Hashable, float] | None:
        if self._model is None or not hasattr(self._model, "predict_proba"):
            return None
        with _one_thread():
            proba = self._model.predict_proba(self._features(x))[0]
        return dict(zip(self._model.classes_.tolist(), proba.tolist(), strict=True))

    def predict_with_proba(self, x: dict) -> tuple[Any, dict[Hashable, float] | None]:
        # The allowed classifiers predict the class of highest probability: one call, not two.
        proba = self.predict_proba_one(x)
        if proba is None:
            return self.predict_one(x), None
        return max(proba, key=proba.__getitem__), proba

    def learn_one(self, x: dict, y: Any) -> None:
        # A copy: the caller may reuse its dict, and jobs share the window's rows.
        self._rows.append(dict(x))
        self._labels.append(y)
        self.n_learned += 1
        if self.n_learned % self.refit_every == 0:
            self._cut()
        while self._jobs and self._jobs[0].due <= self.n_learned:
            self._install(self._jobs.popleft())

    def _features(self, x: dict) -> Any:
        return _hashed(self._hasher, [x]).toarray()

    def _cut(self) -> RefitJob | None:
        if not self._labels or (self._is_classifier and len(set(self._labels)) < 2):
            return None
        job = RefitJob(
            candidate=self.name,
            cut=self.n_learned,
            due=self.n_learned + self.refit_lag,
            estimator=self.estimator,
            rows=tuple(self._rows),
            labels=tuple(self._labels),
            n_features=self.n_features,
        )
        self._jobs.append(job)
        return job

    def _install(self, job: RefitJob) -> None:
        # Popped first: a fit that raises (the trainer quarantines the candidate) is not retried.
        fitted = self._provided.pop(id(job), None)
        self._model = job.fit() if fitted is None else fitted
        self.n_refits += 1


class _Builder:
    """Turns one candidate specification into a candidate; each method checks one field."""

    ALLOWED_KEYS: ClassVar[dict[str, set[str]]] = {
        "river": {"name", "river", "params"},
        "sklearn": {"name", "sklearn", "params", "batch_size", "n_features", "classes"},
        "sklearn_window": {
            "name",
            "sklearn_window",
            "params",
            "window_events",
            "refit_every",
            "refit_lag",
            "n_features",
        },
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
        backends = [key for key in self.ALLOWED_KEYS if key in self.spec]
        if len(backends) != 1:
            raise self.fail("give exactly one of 'river', 'sklearn' or 'sklearn_window'")
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
        if backend == "sklearn_window":
            return self.sklearn_window_candidate(description, params)
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

    def sklearn_estimator(
        self, backend: str, allowlist: Mapping[str, tuple[str, str]], params: dict[str, Any]
    ) -> Any:
        """The unfitted estimator the `backend` key names, looked up in `allowlist`."""
        class_name = self.spec[backend]
        if class_name not in allowlist:
            raise self.fail(
                f"scikit-learn estimator {class_name!r} is not allowed for {backend!r}; "
                f"allowed: {sorted(allowlist)}"
            )
        module_name, estimator_task = allowlist[class_name]
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
        return estimator

    def sklearn_candidate(self, description: dict, params: dict[str, Any]) -> SklearnCandidate:
        return SklearnCandidate(
            self.name,
            description,
            self.sklearn_estimator("sklearn", SKLEARN_ESTIMATORS, params),
            batch_size=self.positive_int("batch_size", 100),
            n_features=self.positive_int("n_features", 2**8),
            classes=self.classes(),
        )

    def sklearn_window_candidate(
        self, description: dict, params: dict[str, Any]
    ) -> SklearnWindowCandidate:
        estimator = self.sklearn_estimator("sklearn_window", SKLEARN_WINDOW_ESTIMATORS, params)
        # A fixed seed: a refit must give the same model in every run and after every replay.
        if "random_state" in estimator.get_params() and "random_state" not in params:
            estimator.set_params(random_state=0)
        return SklearnWindowCandidate(
            self.name,
            description,
            estimator,
            window_events=self.positive_int("window_events", 1_000),
            refit_every=self.positive_int("refit_every", 500),
            refit_lag=self.positive_int("refit_lag", 0, minimum=0),
            n_features=self.positive_int("n_features", 2**8),
            is_classifier=self.task == "classification",
        )

    def positive_int(self, key: str, default: int, *, minimum: int = 1) -> int:
        value = self.spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise self.fail(f"{key!r} must be {wanted}, got {value!r}")
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
