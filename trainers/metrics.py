"""Prequential (test-then-train) scoring of one candidate.

Each event is first predicted, then scored here, then learned. `PrequentialScore` keeps two
views of the same stream of scores:

* **cumulative** metrics over every event, from running counters;
* **recent** metrics over the last ``n`` events (``rolling()`` is the last ``window`` events),
  recomputed on demand from bounded deques of the last ``history`` events. ``history`` is at least
  the policy's ``min_samples``, so that the paired tests can look that far back.

The per-event update only appends to deques and bumps counters; the metrics themselves are
computed when asked for (progress reports and policy evaluations), which keeps the hot path cheap.

Metrics
-------
Classification: ``accuracy``; ``f1``, which is binary F1 when the labels seen so far are a subset
of {0, 1} / {False, True} (positive class 1/True) or are exactly two other labels (positive class:
the second label seen), and macro F1 over the labels seen otherwise; ``log_loss`` (cross-entropy of
the probability given to the true label, clipped at 1e-15), averaged over the events that had
probabilities. A missing prediction (None, e.g. before a model has learned anything) counts as an
error, and as a false negative of the true class for F1.

Regression: ``mae`` and ``rmse``, over the events that had a prediction.

``missing`` counts the events without a prediction and ``missing_proba`` (classification) those
without probabilities; the promotion policy refuses a candidate whose metric is not complete over
its paired window.

The per-event *paired loss* kept for the fixed-sample significance tests is the error bit (0/1)
for classification and the absolute error for regression (None when there was no prediction).
`event_loss` is the per-event loss whose mean is a metric (whose mean's square root, for
``rmse``): the error bit for ``accuracy``, the log-loss for ``log_loss``, the absolute error for
``mae``, the squared error for ``rmse``. F1 is no mean of per-event losses, so it has none.

Examples
--------
>>> from trainers.metrics import PrequentialScore
>>> score = PrequentialScore("classification", window=3)
>>> for y_true, y_pred in [(True, True), (False, True), (True, True), (True, None)]:
...     score.update(y_true, y_pred, {True: 0.8, False: 0.2} if y_pred is not None else None)
>>> score.cumulative()["accuracy"], score.rolling()["accuracy"]
(0.5, 0.3333333333333333)
>>> round(score.cumulative()["f1"], 3)  # tp=2, fp=1, fn=1
0.667
>>> score.losses(3)
[1, 0, 1]
>>> score.rolling()["missing"], score.rolling()["missing_proba"]
(1, 1)

>>> score = PrequentialScore("regression", window=10)
>>> for y_true, y_pred in [(1.0, 2.0), (3.0, 1.0), (0.0, None)]:
...     score.update(y_true, y_pred)
>>> score.cumulative()
{'n': 3, 'missing': 1, 'mae': 1.5, 'rmse': 1.5811388300841898}

References
----------
[^1]: Gama, J., Sebastião, R. and Rodrigues, P.P., 2013. On evaluating stream learning
    algorithms. Machine Learning, 90(3), pp. 317-346.
[^2]: Dawid, A.P., 1984. Present position and potential developments: some personal views.
    Statistical theory, the prequential approach. Journal of the Royal Statistical Society,
    Series A, 147(2), pp. 278-292.

"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

__all__ = [
    "CLASSIFICATION_METRICS",
    "HIGHER_IS_BETTER",
    "REGRESSION_METRICS",
    "PrequentialScore",
    "event_loss",
    "f1_score",
    "is_complete",
]

CLASSIFICATION_METRICS = ("accuracy", "f1", "log_loss")
REGRESSION_METRICS = ("mae", "rmse")

#: Direction of each metric: True when higher is better.
HIGHER_IS_BETTER: Mapping[str, bool] = {
    "accuracy": True,
    "f1": True,
    "log_loss": False,
    "mae": False,
    "rmse": False,
}

_PROBABILITY_FLOOR = 1e-15


def f1_score(
    confusion: Mapping[tuple[Hashable, Hashable], int], classes: Sequence[Hashable]
) -> float:
    """F1 from a confusion count of ``(y_true, y_pred)`` pairs; see the module docstring.

    Parameters
    ----------
    confusion
        How many times each ``(y_true, y_pred)`` pair occurred.
    classes
        The true labels seen, in order of first appearance (decides the positive class).

    Examples
    --------
    >>> f1_score({("a", "a"): 3, ("b", "b"): 1, ("a", "b"): 1}, ["a", "b"])  # positive: "b"
    0.6666666666666666
    >>> f1_score({(0, 0): 1, (1, 1): 1, (2, 0): 1}, [0, 1, 2])  # macro over three classes
    0.5555555555555555

    """

    def class_f1(positive: Hashable) -> float:
        true_positives = confusion.get((positive, positive), 0)
        false_positives = false_negatives = 0
        for (y_true, y_pred), count in confusion.items():
            if y_pred == positive and y_true != positive:
                false_positives += count
            elif y_true == positive and y_pred != positive:
                false_negatives += count
        denominator = 2 * true_positives + false_positives + false_negatives
        return 2 * true_positives / denominator if denominator else 0.0

    if classes and set(classes) <= {0, 1}:
        return class_f1(1)
    if len(classes) == 2:
        return class_f1(classes[1])
    if not classes:
        return 0.0
    return sum(class_f1(c) for c in classes) / len(classes)


def event_loss(
    metric: str, y_true: Any, y_pred: Any, proba: Mapping[Hashable, float] | None = None
) -> float | None:
    """The loss of one prediction whose mean over events is `metric` (see the module docstring).

    None when the event does not count towards the metric: no prediction of a regressor, no
    probabilities for ``log_loss``. A missing classification counts as an error, as in the
    metrics. Raises `ValueError` for ``f1``, which is no mean of per-event losses.

    >>> event_loss("accuracy", "a", "b"), event_loss("accuracy", "a", None)
    (1.0, 1.0)
    >>> round(event_loss("log_loss", "a", "a", {"a": 0.5, "b": 0.5}), 4)
    0.6931
    >>> event_loss("mae", 3.0, 1.0), event_loss("rmse", 3.0, 1.0), event_loss("mae", 3.0, None)
    (2.0, 4.0, None)

    """
    if metric == "accuracy":
        return 0.0 if y_pred is not None and y_pred == y_true else 1.0
    if metric == "log_loss":
        return None if proba is None else _log_loss(proba, y_true)
    if metric in REGRESSION_METRICS:
        if y_pred is None:
            return None
        error = abs(y_pred - y_true)
        return float(error if metric == "mae" else error * error)
    raise ValueError(f"{metric!r} is no mean of per-event losses")


def _log_loss(proba: Mapping[Hashable, float], y_true: Any) -> float:
    return -math.log(max(proba.get(y_true, 0.0), _PROBABILITY_FLOOR))


def is_complete(metric: str, summary: Mapping[str, Any]) -> bool:
    """Whether `metric` in a metrics `summary` covers every event it summarises.

    >>> is_complete("log_loss", {"missing": 0, "missing_proba": 2})
    False
    >>> is_complete("accuracy", {"missing": 2, "missing_proba": 2})
    True

    """
    if metric == "log_loss":
        return summary["missing_proba"] == 0
    if metric in REGRESSION_METRICS:
        return summary["missing"] == 0
    return True


class PrequentialScore:
    """Cumulative and recent prequential metrics of one candidate.

    Parameters
    ----------
    task
        ``"classification"`` or ``"regression"``.
    window
        Number of most recent events summarised by `rolling`.
    history
        Number of most recent events kept for `recent` and `losses`; at least `window`
        (defaults to it).

    """

    def __init__(self, task: str, window: int, history: int | None = None) -> None:
        history = window if history is None else history
        if window < 1 or history < window:
            raise ValueError(f"need 1 <= window <= history, got {window=} {history=}")
        self.task = task
        self.window = window
        self.history = history
        self.n = 0
        self._classification = task == "classification"
        self._labels: deque[Any] = deque(maxlen=history)
        self._predictions: deque[Any] = deque(maxlen=history)
        # Classification: error bits. Regression: absolute errors, None for missing predictions.
        self._losses: deque[Any] = deque(maxlen=history)
        self._log_losses: deque[float | None] = deque(maxlen=history)
        # Labels seen, in order of first appearance (a dict keeps order and looks up in O(1)).
        self._classes: dict[Hashable, None] = {}
        self._missing = 0
        self._missing_proba = 0
        self._errors = 0
        self._confusion: dict[tuple[Hashable, Hashable], int] = {}
        self._log_loss_sum = 0.0
        self._absolute_sum = 0.0
        self._squared_sum = 0.0

    def update(
        self, y_true: Any, y_pred: Any, proba: Mapping[Hashable, float] | None = None
    ) -> None:
        """Score one prediction (and its class probabilities, if any) against the true label."""
        self.n += 1
        self._labels.append(y_true)
        self._predictions.append(y_pred)
        if y_pred is None:
            self._missing += 1
        if not self._classification:
            loss = None if y_pred is None else abs(y_pred - y_true)
            if loss is not None:
                self._absolute_sum += loss
                self._squared_sum += loss * loss
            self._losses.append(loss)
            return
        if y_true not in self._classes:
            self._classes[y_true] = None
        error = 1 if y_pred is None or y_pred != y_true else 0
        self._errors += error
        self._losses.append(error)
        pair = (y_true, y_pred)
        self._confusion[pair] = self._confusion.get(pair, 0) + 1
        if proba is None:
            self._missing_proba += 1
            self._log_losses.append(None)
        else:
            log_loss = _log_loss(proba, y_true)
            self._log_loss_sum += log_loss
            self._log_losses.append(log_loss)

    def cumulative(self) -> dict[str, Any]:
        """Metrics over every event scored so far."""
        if self._classification:
            with_proba = self.n - self._missing_proba
            return {
                "n": self.n,
                "missing": self._missing,
                "missing_proba": self._missing_proba,
                "accuracy": 1 - self._errors / self.n if self.n else None,
                "f1": f1_score(self._confusion, list(self._classes)) if self.n else None,
                "log_loss": self._log_loss_sum / with_proba if with_proba else None,
            }
        return _regression_summary(self.n, self._missing, self._absolute_sum, self._squared_sum)

    def rolling(self) -> dict[str, Any]:
        """Metrics over the last `window` events."""
        return self.recent(self.window)

    def recent(self, n: int) -> dict[str, Any]:
        """Metrics over the last `n` events (fewer if fewer were kept)."""
        if self._classification:
            labels = self._tail(self._labels, n)
            predictions = self._tail(self._predictions, n)
            log_losses = self._tail(self._log_losses, n)
            return _classification_summary(labels, predictions, log_losses, list(self._classes))
        losses = self._tail(self._losses, n)
        present = [loss for loss in losses if loss is not None]
        return _regression_summary(
            len(losses), len(losses) - len(present), sum(present), sum(x * x for x in present)
        )

    def losses(self, n: int) -> list[Any]:
        """Per-event paired losses of the last `n` events, oldest first."""
        return self._tail(self._losses, n)

    @staticmethod
    def _tail(values: deque[Any], n: int) -> list[Any]:
        return list(islice(values, max(len(values) - n, 0), None))


def _classification_summary(
    labels: Sequence[Any],
    predictions: Iterable[Any],
    log_losses: Sequence[float | None],
    classes: Sequence[Hashable],
) -> dict[str, Any]:
    # Counted in C: a progress report summarises every candidate's window (bench/throughput.py).
    confusion = Counter(zip(labels, predictions, strict=True))
    n = len(labels)
    correct = sum(count for (y_true, y_pred), count in confusion.items() if y_pred == y_true)
    present = [loss for loss in log_losses if loss is not None]
    return {
        "n": n,
        "missing": sum(count for (_, y_pred), count in confusion.items() if y_pred is None),
        "missing_proba": n - len(present),
        "accuracy": correct / n if n else None,
        "f1": f1_score(confusion, classes) if n else None,
        "log_loss": sum(present) / len(present) if present else None,
    }


def _regression_summary(n: int, missing: int, absolute_sum: float, squared_sum: float) -> dict:
    present = n - missing
    return {
        "n": n,
        "missing": missing,
        "mae": absolute_sum / present if present else None,
        "rmse": math.sqrt(squared_sum / present) if present else None,
    }
