"""Concept-drift detectors fed with the candidates' per-event losses.

`DriftSpec` is a model's ``[models.NAME.drift]`` table, validated; `DriftMonitor` keeps one
river detector per watched candidate and turns each of its alarms into a `Detection`: which
candidate, which detector, the trainer's event count and the event's lineage (``source`` and
``position``, as in `trainers.trainer.ModelTrainer.learn`), and the evidence behind it.

What a detector watches
-----------------------
The trainer feeds every watched candidate's *per-event loss for the policy's metric* (see
`trainers.metrics.event_loss`): the error bit for ``accuracy``, the log-loss for ``log_loss``,
the absolute error for ``mae`` and the squared error for ``rmse``, so that a detector watches
what the promotions compare. An event without a loss (no prediction of a regressor, no
probabilities for ``log_loss``) is not fed. With ``watch = "champion"`` only the champion's loss
is fed (a drift is when *what serves* gets worse); with ``watch = "all"`` every live
candidate's is.

Detectors
---------
===============  =========================  ==================================================
name             river class                what it watches
===============  =========================  ==================================================
``ADWIN``        ``drift.ADWIN``            any real loss: an adaptive window, cut when two
                                            sub-windows' means differ (the default)
``PageHinkley``  ``drift.PageHinkley``      any real loss: cumulative deviation from the mean
``KSWIN``        ``drift.KSWIN``            any real loss: Kolmogorov-Smirnov test on a window
``DDM``          ``drift.binary.DDM``       error bits (``accuracy`` only)
``EDDM``         ``drift.binary.EDDM``      error bits (``accuracy`` only)
``HDDM_A``       ``drift.binary.HDDMA``     error bits (``accuracy`` only)
``HDDM_W``       ``drift.binary.HDDMW``     error bits (``accuracy`` only)
===============  =========================  ==================================================

``params`` are the river class's keyword arguments. A detector that samples at random (KSWIN)
gets ``seed = 0`` unless one is given, so that a replay after a crash detects at the same events.
After an alarm the river detector goes on with what it kept (ADWIN its recent window; the
binary ones start over).

Settings
--------
==============================  ============  ================================================
field                           default       meaning
==============================  ============  ================================================
``detector``                    ``"ADWIN"``   one of the detectors above
``params``                      ``{}``        the detector's keyword arguments
``watch``                       champion      ``"champion"`` or ``"all"``
``actions``                     ``[]``        what a detection does: ``reset``, ``refit``,
                                              ``shorten_cooldown``
``reset``                       the champion  the candidate whose specification a reset copies
``max_reset_copies``            1             reset copies kept; a new one replaces the oldest
``min_events_between_actions``  1000          events between two actions (a rate limit)
``cooldown_after_drift``        0             the cooldown ``shorten_cooldown`` sets
==============================  ============  ================================================

A monitor is plain Python state (river detectors pickle), so it is part of the trainer's
snapshot, and a restored monitor detects exactly where the original would have.

Examples
--------
>>> from trainers.drift import DriftMonitor, DriftSpec
>>> spec = DriftSpec.from_dict({"detector": "ADWIN", "actions": ["reset"]}, ["nb", "hat"],
...                            task="classification", metric="accuracy")
>>> spec.detector, spec.watch, spec.actions, spec.reset
('ADWIN', 'champion', ('reset',), None)
>>> monitor = DriftMonitor(spec)
>>> errors = [int(i % 10 == 0) for i in range(2000)] + [int(i % 2 == 0) for i in range(1000)]
>>> detections = [
...     detection
...     for event, loss in enumerate(errors, start=1)
...     if (detection := monitor.update("nb", loss, event=event, source="sea", position=event - 1))
... ]
>>> [(d.candidate, d.detector, d.event, d.position) for d in detections][:1]
[('nb', 'ADWIN', 2048, 2047)]
>>> round(detections[0].evidence["mean_loss_before"], 3), detections[0].evidence["events"]
(0.109, 2048)

The binary detectors only read error bits:

>>> DriftSpec.from_dict({"detector": "DDM"}, ["lr"], task="regression", metric="mae")
Traceback (most recent call last):
...
trainers.errors.ConfigError: drift.detector 'DDM' reads error bits: it needs a classification \
model whose policy.metric is accuracy (use ADWIN, PageHinkley or KSWIN for mae)

References
----------
[^1]: Bifet, A. and Gavaldà, R., 2007. Learning from time-changing data with adaptive
    windowing. Proceedings of the 2007 SIAM International Conference on Data Mining, pp. 443-448.
[^2]: Page, E.S., 1954. Continuous inspection schemes. Biometrika, 41(1/2), pp. 100-115.
[^3]: Raab, C., Heusinger, M. and Schleif, F.M., 2020. Reactive soft prototype computing for
    concept drift streams. Neurocomputing, 416, pp. 340-351 (KSWIN).
[^4]: Gama, J., Medas, P., Castillo, G. and Rodrigues, P., 2004. Learning with drift detection.
    Brazilian Symposium on Artificial Intelligence, pp. 286-295 (DDM).
[^5]: Baena-García, M., del Campo-Ávila, J., Fidalgo, R., Bifet, A., Gavaldà, R. and
    Morales-Bueno, R., 2006. Early drift detection method. Fourth International Workshop on
    Knowledge Discovery from Data Streams (EDDM).
[^6]: Frías-Blanco, I., del Campo-Ávila, J., Ramos-Jiménez, G., Morales-Bueno, R.,
    Ortiz-Díaz, A. and Caballero-Mota, Y., 2015. Online and non-parametric drift detection
    methods based on Hoeffding's bounds. IEEE Transactions on Knowledge and Data Engineering,
    27(3), pp. 810-823 (HDDM_A, HDDM_W).
[^7]: Montiel, J. et al., 2021. River: machine learning for streaming data in Python. Journal
    of Machine Learning Research, 22(110), pp. 1-8.

"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from river import base, drift
from river.drift import binary

from trainers.errors import ConfigError

__all__ = [
    "ACTIONS",
    "BINARY_DETECTORS",
    "DETECTORS",
    "RECENT_EVENTS",
    "WATCHES",
    "Detection",
    "DriftMonitor",
    "DriftSpec",
]

#: The detectors a configuration may name, and the river class behind each.
DETECTORS: Mapping[str, type[base.DriftDetector] | type[base.BinaryDriftDetector]] = (
    MappingProxyType(
        {
            "ADWIN": drift.ADWIN,
            "PageHinkley": drift.PageHinkley,
            "KSWIN": drift.KSWIN,
            "DDM": binary.DDM,
            "EDDM": binary.EDDM,
            "HDDM_A": binary.HDDMA,
            "HDDM_W": binary.HDDMW,
        }
    )
)
#: Detectors of error bits: only a classification model scored on accuracy feeds them.
BINARY_DETECTORS = frozenset({"DDM", "EDDM", "HDDM_A", "HDDM_W"})
#: What a detection may trigger (carried out by the trainer, see `trainers.trainer`).
ACTIONS = ("reset", "refit", "shorten_cooldown")
#: Whose losses feed a detector.
WATCHES = ("champion", "all")
#: How many of a candidate's last losses say which way a detection went (`Detection.worsened`).
RECENT_EVENTS = 30

# A random detector must draw the same numbers on a replay, or it would detect elsewhere.
_DEFAULT_SEED = 0


def _count(value: Any, minimum: int) -> bool:
    # bool is an int subclass, but `max_reset_copies = true` is a typo, not a number.
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _build(detector: str, params: Mapping[str, Any]) -> Any:
    """A fresh river detector `detector` with `params` (and the default seed if it takes one)."""
    cls = DETECTORS[detector]
    kwargs = dict(params)
    if "seed" in inspect.signature(cls).parameters:
        kwargs.setdefault("seed", _DEFAULT_SEED)
    return cls(**kwargs)


@dataclass(frozen=True)
class DriftSpec:
    """A model's drift detection and what a detection does (see the module docstring).

    Parameters
    ----------
    detector
        A name of `DETECTORS`.
    params
        The river detector's keyword arguments.
    watch
        ``"champion"`` or ``"all"``: whose per-event loss feeds a detector.
    actions
        What a detection triggers, a subset of `ACTIONS`.
    reset
        The candidate whose specification a ``reset`` copies; None: the champion's.
    max_reset_copies
        Reset copies kept at once; a new one replaces the oldest beyond this.
    min_events_between_actions
        Fewest events between two actions.
    cooldown_after_drift
        The promotion cooldown that ``shorten_cooldown`` sets after a detection.

    """

    detector: str = "ADWIN"
    params: Mapping[str, Any] = field(default_factory=dict)
    watch: str = "champion"
    actions: tuple[str, ...] = ()
    reset: str | None = None
    max_reset_copies: int = 1
    min_events_between_actions: int = 1000
    cooldown_after_drift: int = 0

    @classmethod
    def from_dict(
        cls, table: Any, candidates: Collection[str], *, task: str, metric: str
    ) -> DriftSpec:
        """Validate a ``drift`` table of a model with `candidates`, `task` and policy `metric`.

        Raises `ConfigError` naming the faulty key (``drift.KEY``).
        """
        if not isinstance(table, Mapping):
            raise ConfigError("drift: must be a table/dict")
        known = {name for name in cls.__dataclass_fields__}
        unknown = set(table) - known
        if unknown:
            raise ConfigError(f"drift: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        defaults = cls()
        detector = table.get("detector", defaults.detector)
        if detector not in DETECTORS:
            raise ConfigError(f"drift.detector must be one of {list(DETECTORS)}, got {detector!r}")
        if detector in BINARY_DETECTORS and (task != "classification" or metric != "accuracy"):
            raise ConfigError(
                f"drift.detector {detector!r} reads error bits: it needs a classification model "
                f"whose policy.metric is accuracy (use ADWIN, PageHinkley or KSWIN for {metric})"
            )
        params = table.get("params", {})
        if not isinstance(params, Mapping):
            raise ConfigError(f"drift.params must be a table/dict, got {params!r}")
        try:
            _build(detector, params)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"drift.params do not fit {detector}: {error}") from None
        watch = table.get("watch", defaults.watch)
        if watch not in WATCHES:
            raise ConfigError(f"drift.watch must be one of {list(WATCHES)}, got {watch!r}")
        actions = table.get("actions", [])
        if (
            not isinstance(actions, list | tuple)
            or any(action not in ACTIONS for action in actions)
            or len(set(actions)) != len(actions)
        ):
            raise ConfigError(
                f"drift.actions must be a list of distinct actions among {list(ACTIONS)}, "
                f"got {actions!r}"
            )
        reset = table.get("reset")
        if reset is not None:
            if reset not in candidates:
                raise ConfigError(
                    f"drift.reset: {reset!r} is not a candidate; candidates: {list(candidates)}"
                )
            if "reset" not in actions:
                raise ConfigError(
                    "drift.reset names the candidate a reset copies: add 'reset' to drift.actions"
                )
        counts = {
            "max_reset_copies": 1,
            "min_events_between_actions": 0,
            "cooldown_after_drift": 0,
        }
        for name, minimum in counts.items():
            value = table.get(name, getattr(defaults, name))
            if not _count(value, minimum):
                raise ConfigError(f"drift.{name} must be an integer >= {minimum}, got {value!r}")
        return cls(
            detector=detector,
            params=dict(params),
            watch=watch,
            actions=tuple(actions),
            reset=reset,
            max_reset_copies=table.get("max_reset_copies", defaults.max_reset_copies),
            min_events_between_actions=table.get(
                "min_events_between_actions", defaults.min_events_between_actions
            ),
            cooldown_after_drift=table.get("cooldown_after_drift", defaults.cooldown_after_drift),
        )


@dataclass(frozen=True)
class Detection:
    """A detector's alarm on one candidate's losses.

    Parameters
    ----------
    candidate
        The candidate whose losses drifted.
    detector
        The detector's name (a key of `DETECTORS`).
    event
        The trainer's event count when it fired (the event that tipped it).
    source
        The lineage of that event: its source, as given to ``learn``.
    position
        Its position in `source`.
    evidence
        ``events`` the detector watched since it started or last fired, ``mean_loss_before``
        over them, ``mean_loss_recent`` over the last `RECENT_EVENTS` of them, ``direction``
        (``"up"`` when the recent losses are higher: the candidate got worse; ``"down"`` when
        they are lower, as when a tree grows a useful split), the detector's ``params``, and
        for ADWIN the ``window_width`` and ``window_mean`` it kept after the cut (the loss level
        since the change).

    """

    candidate: str
    detector: str
    event: int
    source: str
    position: int
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def worsened(self) -> bool:
        """Whether the loss went up: only then is the drift one to act on."""
        return self.evidence.get("direction", "up") == "up"


@dataclass
class _Watch:
    """One candidate's detector, and the losses it saw since it started or last fired."""

    detector: Any
    events: int = 0
    loss_sum: float = 0.0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))


class DriftMonitor:
    """One river detector per watched candidate, started at its first loss.

    Parameters
    ----------
    spec
        The model's drift settings.

    """

    def __init__(self, spec: DriftSpec) -> None:
        self.spec = spec
        self._binary = spec.detector in BINARY_DETECTORS
        self._watches: dict[str, _Watch] = {}

    def update(
        self, candidate: str, loss: float, *, event: int, source: str, position: int
    ) -> Detection | None:
        """Feed one loss of `candidate`; return a `Detection` if its detector fires on it."""
        watch = self._watches.get(candidate)
        if watch is None:
            watch = self._watches[candidate] = _Watch(_build(self.spec.detector, self.spec.params))
        detector = watch.detector
        detector.update(loss >= 1 if self._binary else loss)
        watch.events += 1
        watch.loss_sum += loss
        watch.recent.append(loss)
        if not detector.drift_detected:
            return None
        mean_before = watch.loss_sum / watch.events
        mean_recent = sum(watch.recent) / len(watch.recent)
        evidence: dict[str, Any] = {
            "events": watch.events,
            "mean_loss_before": mean_before,
            "mean_loss_recent": mean_recent,
            # Detectors such as ADWIN and KSWIN are two-sided: they fire on a fall of the loss
            # too, which is no drift to act on.
            "direction": "up" if mean_recent > mean_before else "down",
            "params": dict(self.spec.params),
        }
        if isinstance(detector, drift.ADWIN):
            evidence.update(window_width=int(detector.width), window_mean=detector.estimation)
        watch.events, watch.loss_sum = 0, 0.0
        watch.recent.clear()
        return Detection(
            candidate=candidate,
            detector=self.spec.detector,
            event=event,
            source=source,
            position=position,
            evidence=evidence,
        )

    def forget(self, candidate: str) -> None:
        """Drop `candidate`'s detector: its next loss starts a fresh one (after a reset, a
        replacement or a new champion, the losses before are another model's)."""
        self._watches.pop(candidate, None)

    @property
    def watched(self) -> tuple[str, ...]:
        """The candidates with a detector now, in the order they were first fed."""
        return tuple(self._watches)
