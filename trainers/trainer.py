"""The per-model trainer a worker holds: prequential learning, lineage and promotions.

`ModelTrainer.learn` is the per-event hot path. For each event it

1. asks every live candidate for its prediction (and class probabilities) — the candidates are
   *tested* on the event before they learn it, so their scores are honest out-of-sample
   estimates (prequential evaluation);
2. lets every live candidate learn the event, and scores the predictions of those that did;
3. records the event's lineage (`trainers.lineage`): an opaque ``source`` name the caller
   chooses and a ``position`` that increases within that source (a Kafka worker may pass
   ``"topic[partition]"`` and the offset, a replay a file name and a line number);
4. feeds each watched candidate's loss for the policy's metric to the drift monitor, if the
   model has one (below), and adds the event to the champion's paired tests
   (`trainers.sequential`);
5. every ``policy.every`` events (and at ``policy.warmup``) asks the `PromotionPolicy` whether to
   promote, and on a decision issues the next version as a `Promotion`; every ``refresh_every``
   events (when set) it checks whether the champion deserves a ``refresh`` (below).

The trainer is pure: no I/O, no clock, no randomness beyond the candidates' seeds. Its whole state
pickles (`snapshot`), and a trainer restored under the same specification continues exactly as
the original would.

Quarantine
----------
A candidate that raises while predicting or learning an event is *quarantined*: from that event
on it neither predicts, learns nor competes, and the trainer keeps why (`quarantined`, and
``quarantined`` in `report`). It is not scored on the event it failed, so its score still counts
exactly the events it learned; every other candidate learns that event as usual, and `learn`
returns normally. Only a reset on restore brings a quarantined candidate back.

Champion
--------
The champion is the live candidate defending the title; what serves is the copy it was promoted
(or adopted) with, frozen at that time, under `champion_version`. When the champion stops
training — quarantined, dropped from the configuration, reset on restore, or an adopted candidate
that is not configured — its copy keeps serving, but the title is *vacant*: at the policy's first
evaluation after the cooldown (counted from the last promotion or adoption, so that an operator's
choice is not overruled at once) the initial rule picks the best live candidate on the recent
window, as version ``latest_version + 1`` of kind ``"initial"``, whose reason says why the title
was vacant.
The configured ``champion`` is only a cold-start preference: it is not imposed again once a
version has served.

Served copy and refreshes
-------------------------
The champion keeps learning after its promotion while the scorers serve its frozen copy. The
trainer keeps that *served copy* (the estimator of the version serving as stable: the copy it
promoted, or the artifact an adoption handed it) and tests it on every event like the candidates,
before any of them learns, with the same metrics, but never lets it learn. Its score restarts
whenever another version serves, so that it always describes the version serving now, and
`report` shows it under ``served`` with the ``staleness`` of the serving version: the live
champion's primary metric next to the served copy's, on the events both scored.

With ``refresh_every > 0``, every ``refresh_every`` events, the policy compares the live champion
with its served copy exactly as it compares a challenger with the champion (cooldown since the
last promotion or adoption, ``min_samples`` paired events, ``margin`` and the paired test at
``alpha``), and when the live champion wins it is issued again as a new version of kind
``"refresh"``. A served copy that raises while predicting is no longer tested (``served``
says why in `report`), and no refresh is issued against it.

Rollout strategies
------------------
Under the ``direct`` strategy every promotion serves at once, and the promoted candidate is the
champion. Under ``canary`` and ``shadow`` (see `trainers.spec.RolloutSpec`), the first version of
a model still serves at once (as ``initial``: there is nothing to compare it with), but every later
promotion, challenger or refresh (or a new champion for a vacant title) is issued as a *trial*:
a `Promotion` of kind ``"canary"`` or ``"shadow"``, with a new version number and
``rollout={"fraction": f}`` (1.0 for a shadow), and ``evidence["decision"]`` saying what the
policy decided. The champion does not change: a trial serves beside the stable version until a
``rollout`` (the worker calls `adopt` with the trial's version: the promoted candidate becomes
the champion) or a ``rollback`` ends it. While a trial is pending (`trial`), the policy is not
consulted for the model, so that a second trial never competes with the first and the evidence of
the guardrail is about one version at a time; `adopt` ends the pending trial whatever it adopts.

Obeying the registry
--------------------
`adopt` makes a version the one serving as stable: an operator's promote, a rollout or a
rollback. Given the version's frozen artifact (``estimator``), the trainer tests it as the
served copy. Unless the version is the pending trial rolled out (whose candidate has been
learning from where the trial's copy was taken), the artifact also *replaces* the live candidate
of that name: after a rollback the champion is the rolled-back version as served, not the live
candidate of the same name that kept learning since, and its scores restart with it, so that its
metrics describe what serves (no challenger can win until the adopted champion has
``min_samples`` paired events).

Drift detection and paired tests
--------------------------------
With a ``drift`` table, the trainer's `trainers.drift.DriftMonitor` watches the champion's (or
every candidate's) per-event loss; its detections are queued (`take_detections`). The champion's
paired tests against each challenger (and, for refreshes, against its served copy) run from the
first event the pair is compared and restart, spending a new round of the policy's alpha (see
`trainers.policy`), when the champion changes, is adopted or vacated, when a detector fires on
the champion, and for a candidate reset, replaced or quarantined.

Drift actions and window refits
-------------------------------
Each detection of the model's drift monitor (`trainers.drift`) is acted on within the event that
tipped it, by the `trainers.actions.DriftResponder`: ``reset`` adds a fresh copy of a candidate,
``"<name>@reset<k>"``, as a challenger; ``refit`` cuts a refit job on every ``sklearn_window``
candidate; ``shorten_cooldown`` shortens what remains of the cooldown. The detection and its
actions are queued as numbered `trainers.actions.Notice` s, which the caller takes
(`take_notices`) and publishes. An ``sklearn_window`` candidate's pending refit jobs are listed
by `refit_jobs`: a caller may fit them elsewhere and hand each result in (`provide_refit`)
before the event that installs it (``refit_jobs(due_next=True)``); a job not handed in is fitted
inline at that event, with the same result. Reset copies are not in the configuration: a restore
keeps them while the candidate they copy is configured unchanged, and drops them otherwise.

Configuration changes
---------------------
The configuration owns the model, not the checkpoint: `ModelTrainer.restore` takes the current
`ModelSpec`. The policy, the window, the rollout strategy and ``refresh_every`` come from it
(scores keep their most recent events up to the new bounds; a pending trial goes on until the
registry ends it, whatever the strategy now); a candidate new in the specification starts
fresh; one no longer in it is dropped; one whose specification changed (see
`trainers.spec.candidate_digest`) raises `CandidateChangedError` unless it is among the
candidates to ``reset``, which start fresh. A fresh candidate only learns until it has scored
``policy.min_samples`` events (or as many as the others keep, if fewer): paired with the others
sooner, it would shrink their window below ``min_samples`` and stop every challenge.

Examples
--------
>>> from trainers.spec import ModelSpec
>>> from trainers.synthetic import drift_stream
>>> from trainers.trainer import ModelTrainer
>>> table = {
...     "task": "classification",
...     "champion": "nb",
...     "candidates": [
...         {"name": "nb", "river": "naive_bayes.GaussianNB"},
...         {"name": "lr", "river": "StandardScaler | LogisticRegression"},
...     ],
...     "policy": {"warmup": 100, "every": 100},
... }
>>> trainer = ModelTrainer(ModelSpec.from_dict("sea", table))
>>> stream = drift_stream("sea", n=300, drift_at=1000, seed=1)
>>> promotions = [
...     promotion
...     for position, (x, y) in enumerate(stream)
...     if (promotion := trainer.learn(x, y, source="sea", position=position))
... ]
>>> [(p.version, p.kind, p.candidate) for p in promotions]
[(1, 'initial', 'nb')]
>>> lineage = promotions[0].lineage
>>> lineage["source"], lineage["first_offset"], lineage["last_offset"], lineage["events"]
('sea', 0, 99, 100)
>>> lineage["verifiable"], lineage["configurations"][0]["table"]["champion"]
(True, 'nb')
>>> trainer.champion, trainer.champion_version, trainer.last_position("sea"), trainer.learned
('nb', 1, 299, {'nb': 300, 'lr': 300})

The frozen copy of v1 that serves was tested on the 200 events since, beside the live "nb":

>>> served = trainer.report()["served"]
>>> served["version"], served["n"], sorted(served["staleness"])
(1, 200, ['champion', 'events', 'higher_is_better', 'metric', 'served'])

Restored under an edited configuration, the trainer takes the new candidate list:

>>> hat = {"name": "hat", "river": "tree.HoeffdingTreeClassifier"}
>>> table.update(champion="lr", candidates=[table["candidates"][1], hat])
>>> trainer, changes = ModelTrainer.restore(trainer.snapshot(), ModelSpec.from_dict("sea", table))
>>> changes.started, changes.dropped, changes.vacated, changes.settings
(('hat',), ('nb',), 'nb', ("champion: 'nb' -> 'lr'",))
>>> trainer.champion, trainer.champion_version, trainer.report()["champion"]
(None, 1, 'nb')
>>> trainer.learned
{'lr': 300, 'hat': 0}

"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from trainers.actions import RESET_MARK, Action, DriftResponder, Notice, completed
from trainers.candidates import Candidate, RefitJob, SklearnWindowCandidate, build_candidate
from trainers.drift import Detection, DriftMonitor
from trainers.errors import CandidateChangedError, ConfigError, LabelError, SnapshotError
from trainers.lineage import Lineage
from trainers.metrics import HIGHER_IS_BETTER, PrequentialScore, event_loss
from trainers.policy import Decision
from trainers.sequential import PairedTests
from trainers.serialization import dumps
from trainers.spec import ModelSpec, candidate_digest, check_label

__all__ = ["ModelTrainer", "Promotion", "RestoreChanges"]

# Bumped whenever the pickled state changes shape, so that an old snapshot is refused by name
# instead of failing with an AttributeError somewhere in `learn`.
_SNAPSHOT_FORMAT = 5
# Format 4 lacks the complete lineage; format 3 also the drift monitor and its detections; format
# 2 also the served copy, the trial and the learned counts: `_upgrade` fills them in, so that a
# deployment's checkpoints survive the upgrade.
_UPGRADABLE_FORMATS = frozenset({2, 3, 4})
# Quarantine reasons end up in every metrics report; a stack of sklearn advice need not.
_REASON_CHARS = 500
# The defender of the refresh tests (the live champion challenges the copy that serves).
_SERVED_COPY = "(served copy)"


@dataclass(frozen=True)
class Promotion:
    """A new version of a model, ready to publish.

    Parameters
    ----------
    model
        The model's name.
    version
        The new version number (1 for the first champion).
    previous_version
        The version it replaces, None for the first.
    candidate
        Name of the promoted candidate.
    candidate_params
        The candidate's specification.
    kind
        ``"initial"`` (first champion, or a new one for a vacant title), ``"challenger"``,
        ``"refresh"`` (a fresher copy of the champion), or, under the ``canary`` and ``shadow``
        rollout strategies, ``"canary"`` or ``"shadow"`` (a trial; see the module docstring).
    reason
        One human-readable sentence.
    evidence
        The policy's evidence (window, metrics, paired test, thresholds).
    lineage
        What it learned from: ``source``, ``first_offset`` and ``last_offset`` (the first and
        last positions learned from the source of the event that triggered the promotion),
        ``events`` learned in total, and, when the model learns from several sources,
        ``sources`` with each one's ``source``, ``first_offset`` and ``last_offset``; and
        enough to learn it again bit for bit (the positions learned and skipped, adoptions,
        configurations, whether it is verifiable: see `trainers.lineage`).
    estimator
        A copy of the promoted candidate, frozen at promotion time, to serialise and serve.
    rollout
        For a trial, ``{"fraction": f}``: the share of the events it serves (1.0 for a shadow,
        which scores every event and serves none); None otherwise.

    """

    model: str
    version: int
    previous_version: int | None
    candidate: str
    candidate_params: dict[str, Any]
    kind: str
    reason: str
    evidence: dict[str, Any]
    lineage: dict[str, Any]
    estimator: Candidate
    rollout: dict[str, Any] | None = None

    @property
    def is_trial(self) -> bool:
        """Whether the version goes on trial (``canary`` or ``shadow``) instead of serving."""
        return self.rollout is not None


@dataclass(frozen=True)
class RestoreChanges:
    """What `ModelTrainer.restore` changed to fit the current configuration.

    It is falsy when the snapshot fitted the configuration as it was.

    Parameters
    ----------
    started
        Candidates new in the configuration, started fresh.
    dropped
        Candidates no longer in the configuration, dropped with their state.
    reset
        Candidates started fresh because they were to be reset and had changed or were
        quarantined.
    reset_ignored
        Candidates to be reset that were kept: unchanged and healthy, so that a reset left on a
        worker's command line does not throw away their state again at every restart.
    reset_unknown
        Names to be reset that are not candidates of the model.
    vacated
        The champion, when it was dropped or reset: its promoted copy keeps serving until the
        policy chooses a new champion.
    settings
        Other differences, one ``"field: old -> new"`` line each (window, champion,
        refresh_every, policy, rollout).

    """

    started: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    reset: tuple[str, ...] = ()
    reset_ignored: tuple[str, ...] = ()
    reset_unknown: tuple[str, ...] = ()
    vacated: str | None = None
    settings: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in dataclasses.fields(self))

    def __str__(self) -> str:
        parts = [
            f"{f.name} {value}" if isinstance(value, str) else f"{f.name} {', '.join(value)}"
            for f in dataclasses.fields(self)
            if (value := getattr(self, f.name))
        ]
        return "; ".join(parts) or "no changes"


@dataclass(frozen=True)
class _Paired:
    """A candidate's score as the policy reads it, with `n` the events it actually keeps.

    A score keeps ``min(n, history)`` events, unless a restore grew its history: then it keeps
    fewer, and the policy, which sizes the paired window from ``n`` and ``history``, must know.
    """

    score: PrequentialScore
    n: int

    @property
    def task(self) -> str:
        return self.score.task

    @property
    def history(self) -> int:
        return self.score.history

    def recent(self, n: int) -> dict[str, Any]:
        return self.score.recent(n)


class ModelTrainer:
    """Trains every candidate of one model and promotes champions.

    Parameters
    ----------
    spec
        The model's validated specification.

    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        #: The live candidate defending the title; None before the first one or while vacant.
        self.champion: str | None = None
        self.champion_reason: str | None = None
        #: The last version number issued; versions are never reused.
        self.latest_version = 0
        self.events = 0
        self._format = _SNAPSHOT_FORMAT
        self._champion_version: int | None = None
        self._served: str | None = None
        self._vacated: str | None = None
        self._since_promotion = 0
        self._digests = {c["name"]: candidate_digest(c) for c in spec.candidates}
        self._candidates = [build_candidate(c, spec.task) for c in spec.candidates]
        self._scores = {c.name: self._new_score() for c in self._candidates}
        self._quarantine: dict[str, str] = {}
        self._lineage = Lineage(spec)
        self._learned = {c.name: 0 for c in self._candidates}
        self._classification = spec.task == "classification"
        # The frozen estimator of the version serving as stable, tested but never trained.
        self._served_copy: Candidate | None = None
        self._served_score = self._new_score()
        self._served_failure: str | None = None
        self._trial: Promotion | None = None
        self._drift = None if spec.drift is None else DriftMonitor(spec.drift)
        self._detections: list[Detection] = []
        self._responder = DriftResponder(spec.name)
        self._notices: list[Notice] = []
        # The champion's paired tests against each challenger (and against its served copy).
        self._tests = PairedTests(spec.policy.alpha)
        self._refresh()

    def _new_score(self) -> PrequentialScore:
        # History reaches back min_samples events, so that challengers can be tested that far.
        history = max(self.spec.window, self.spec.policy.min_samples)
        return PrequentialScore(self.spec.task, self.spec.window, history)

    def _refresh(self) -> None:
        """Derive the lookups the hot path uses from the candidates and the quarantine."""
        self._by_name = {candidate.name: candidate for candidate in self._candidates}
        self._live = [
            (candidate, self._scores[candidate.name])
            for candidate in self._candidates
            if candidate.name not in self._quarantine
        ]
        self._windows = [c for c, _ in self._live if isinstance(c, SklearnWindowCandidate)]
        # A label outside a live candidate's declared classes would fail that candidate; refuse
        # the event before anyone sees it rather than quarantine a candidate for a bad event.
        declared = [frozenset(c.classes) for c, _ in self._live if c.classes is not None]
        self._allowed_labels = frozenset.intersection(*declared) if declared else None

    @property
    def version(self) -> int:
        """Alias of `latest_version`, for callers of the old name (not the served version)."""
        return self.latest_version

    @property
    def champion_version(self) -> int | None:
        """The version that serves: the last promoted or adopted one, None before the first."""
        return self._champion_version

    @property
    def learned(self) -> dict[str, int]:
        """Events learned by each candidate (quarantined ones stopped, fresh ones started late).

        A candidate replaced by an adopted artifact keeps its count: it counts the events fed
        to the candidate of that name since it started, not the events behind its state.
        """
        return dict(self._learned)

    @property
    def trial(self) -> Promotion | None:
        """The trial (``canary`` or ``shadow``) issued and not yet rolled out or back, if any."""
        return self._trial

    @property
    def served_copy(self) -> Candidate | None:
        """The frozen estimator of the version serving as stable, None when the trainer has none.

        It has none before the first promotion, after adopting a version without its artifact,
        and after restoring a snapshot older than served copies, until another version serves.
        """
        return self._served_copy

    @property
    def quarantined(self) -> dict[str, str]:
        """Why each quarantined candidate was quarantined, by name."""
        return dict(self._quarantine)

    def refit_jobs(self, *, due_next: bool = False) -> list[RefitJob]:
        """The refit jobs cut and not installed yet, of every live ``sklearn_window`` candidate.

        With `due_next`, only those whose result the next event installs: a caller that fits
        jobs elsewhere (a worker's thread pool) hands these in with `provide_refit` before it
        calls `learn`; a job it did not is fitted inline, with the same result.
        """
        return [
            job
            for candidate in self._windows
            for job in candidate.pending_refits
            if not due_next or job.due <= candidate.n_learned + 1
        ]

    def provide_refit(self, job: RefitJob, fitted: Any) -> None:
        """Hand in ``job.fit()``, computed elsewhere, for the candidate to install when due.

        Raises `ValueError` when `job` is not pending (installed, or its candidate replaced).
        """
        candidate = self._by_name.get(job.candidate)
        if not isinstance(candidate, SklearnWindowCandidate):
            raise ValueError(f"model {self.spec.name!r}: no window candidate {job.candidate!r}")
        candidate.provide(job, fitted)

    def learn(self, features: dict, label: Any, *, source: str, position: int) -> Promotion | None:
        """Test every live candidate on the event, then train them on it; maybe promote.

        Parameters
        ----------
        features
            The event's features.
        label
            Its label.
        source
            The name of the stream the event comes from, opaque to the trainer.
        position
            The event's position in `source`; positions increase within a source. Skipping
            events already learned is the caller's job (see `last_position`).

        Raises `LabelError` (before any candidate sees the event) when the label does not fit
        the model. A candidate that raises is quarantined, and `learn` returns normally.
        """
        problem = check_label(self.spec.task, label)
        if (
            problem is None
            and self._allowed_labels is not None
            and label not in self._allowed_labels
        ):
            problem = (
                f"label {label!r} is not a declared class {sorted(self._allowed_labels, key=repr)}"
            )
        if problem is not None:
            self._lineage.skipped(source, position)
            raise LabelError(f"model {self.spec.name!r}: {problem}")
        # Every candidate is tested before any learns: a learn_one that edits the shared
        # features dict must not change what the next candidate is tested on.
        served = self._test_served(features, source, position)
        tested = []
        for entry in self._live:
            candidate = entry[0]
            try:
                if self._classification:
                    outcome = candidate.predict_with_proba(features)
                else:
                    outcome = (candidate.predict_one(features), None)
            except Exception as error:
                self._quarantine_candidate(candidate.name, "predicting", error, source, position)
                continue
            tested.append((entry, outcome))
        metric = self.spec.policy.metric
        losses: dict[str, float | None] = {}
        for (candidate, score), (prediction, proba) in tested:
            try:
                candidate.learn_one(features, label)
            except Exception as error:
                self._quarantine_candidate(candidate.name, "learning", error, source, position)
                continue
            # Scored only once learned, so that a score counts exactly the events learned.
            score.update(label, prediction, proba)
            self._learned[candidate.name] += 1
            losses[candidate.name] = event_loss(metric, label, prediction, proba)
        if served is not None:
            self._served_score.update(label, *served)
        self.events += 1
        self._since_promotion += 1
        self._lineage.learned(source, position)
        detected = len(self._detections)
        self._watch_drift(losses, source, position)
        for detection in self._detections[detected:]:
            self._respond(detection)
        self._compare(losses, label, served)
        if self._trial is not None:
            # One trial at a time: the guardrail's verdict on this one comes first.
            return None
        decision = self._decide() if self.spec.policy.due(self.events) else None
        if decision is None and self._refresh_due():
            decision = self._decide_refresh()
        return None if decision is None else self._promote(decision, source)

    def _watch_drift(self, losses: Mapping[str, float | None], source: str, position: int) -> None:
        """Feed the watched candidates' losses of the event to the drift monitor; queue alarms."""
        monitor = self._drift
        if monitor is None:
            return
        if monitor.spec.watch == "all":
            watched = list(losses)
        else:
            # A new champion's detector starts fresh: the losses before were another model's.
            for name in monitor.watched:
                if name != self.champion:
                    monitor.forget(name)
            watched = [name for name in losses if name == self.champion]
        for name in watched:
            loss = losses[name]
            if loss is None:
                continue
            detection = monitor.update(
                name, loss, event=self.events, source=source, position=position
            )
            if detection is not None:
                self._detections.append(detection)
                if name == self.champion and detection.worsened:
                    # Evidence from before the drift must not hold back a challenger better after.
                    self._tests.clear()

    def _compare(
        self, losses: Mapping[str, float | None], label: Any, served: tuple[Any, Any] | None
    ) -> None:
        """Add the event to the champion's paired tests, and to the served copy's for refreshes."""
        champion = self.champion
        if champion is None or champion not in losses:
            return
        policy = self.spec.policy
        refreshing = served is not None and self.spec.refresh_every > 0 and champion == self._served
        if len(losses) < 2 and not refreshing:
            return
        bounded = {name: policy.bounded_loss(loss) for name, loss in losses.items()}
        self._tests.observe(champion, bounded, defender_loss=bounded[champion], event=self.events)
        if refreshing:
            assert served is not None  # for mypy: part of `refreshing`
            served_loss = policy.bounded_loss(event_loss(policy.metric, label, *served))
            self._tests.observe(
                _SERVED_COPY,
                {champion: bounded[champion]},
                defender_loss=served_loss,
                event=self.events,
            )

    def _respond(self, detection: Detection) -> None:
        """Carry out the drift actions of `detection` and queue its notices (see
        `trainers.actions`)."""
        spec = self.spec.drift
        assert spec is not None, "only a configured monitor detects"
        tables = {candidate.name: candidate.params for candidate in self._candidates}
        plan = self._responder.respond(detection, spec, champion=self.champion, tables=tables)
        notices = list(plan.notices)
        for action in plan.actions:
            notices[action.notice] = completed(notices[action.notice], **self._carry_out(action))
        self._notices.extend(notices)

    def _carry_out(self, action: Action) -> dict[str, Any]:
        """Do `action`; return what it did, for its notice's evidence."""
        if action.action == "reset":
            assert action.table is not None, "a reset action carries the copy's specification"
            if action.replaces is not None:
                self._remove(action.replaces)
            fresh = build_candidate(action.table, self.spec.task)
            self._candidates.append(fresh)
            self._scores[fresh.name] = self._new_score()
            self._learned[fresh.name] = 0
            self._digests[fresh.name] = candidate_digest(action.table)
            self._refresh()
            return {"copy_of": action.table["name"].split(RESET_MARK)[0]}
        if action.action == "refit":
            jobs = [
                job
                for candidate, _ in self._live
                if isinstance(candidate, SklearnWindowCandidate)
                and (job := candidate.request_refit()) is not None
            ]
            return {"jobs": [{"candidate": j.candidate, "cut": j.cut, "due": j.due} for j in jobs]}
        cooldown = self.spec.policy.cooldown
        remaining = max(cooldown - self._since_promotion, 0)
        assert self.spec.drift is not None, "only a configured monitor acts"
        shortened = min(remaining, self.spec.drift.cooldown_after_drift)
        self._since_promotion = max(self._since_promotion, cooldown - shortened)
        return {"cooldown_remaining": {"before": remaining, "after": shortened}}

    def _remove(self, name: str) -> None:
        """Drop the live candidate `name` (a replaced reset copy) with its state."""
        self._candidates = [c for c in self._candidates if c.name != name]
        for table in (self._scores, self._learned, self._quarantine, self._digests):
            table.pop(name, None)
        if self._drift is not None:
            self._drift.forget(name)
        self._tests.forget(name)

    def take_notices(self) -> list[Notice]:
        """The drift and action notices since the last call, in sequence order: the caller
        publishes each exactly once (see `trainers.actions`). The detections they describe
        are taken with them."""
        notices, self._notices = self._notices, []
        self._detections.clear()
        return notices

    def take_detections(self) -> list[Detection]:
        """The drift detections since the last call, oldest first (the caller publishes them)."""
        detections, self._detections = self._detections, []
        return detections

    def _test_served(self, features: dict, source: str, position: int) -> tuple[Any, Any] | None:
        """The served copy's prediction (and probabilities) of the event, None if not tested."""
        served = self._served_copy
        if served is None or self._served_failure is not None:
            return None
        try:
            if self._classification:
                return served.predict_with_proba(features)
            return served.predict_one(features), None
        except Exception as error:
            # What serves fails too, but the scorer reports that; the trainer stops testing it
            # rather than count an error per event against a version it cannot evaluate.
            failure = (
                f"{type(error).__name__} while predicting event {self.events + 1} "
                f"(source {source!r}, position {position}): {error}"
            )
            self._served_failure = failure[:_REASON_CHARS]
            return None

    def _refresh_due(self) -> bool:
        every = self.spec.refresh_every
        return (
            every > 0
            and self.events % every == 0
            and self.champion is not None
            and self.champion == self._served
            and self._served_copy is not None
            and self._served_failure is None
        )

    def _served_key(self) -> str:
        return f"v{self._champion_version} as served"

    def _decide_refresh(self) -> Decision | None:
        """A ``refresh`` of the champion when it beats its served copy, by the policy's rules."""
        champion = self.champion
        assert champion is not None  # checked by _refresh_due
        key = self._served_key()
        score = self._scores[champion]
        served = self._served_score
        decision = self.spec.policy.decide(
            events=self.events,
            # The served copy defends the title against the live champion, as a challenger would.
            champion=key,
            since_promotion=self._since_promotion,
            scores={
                key: _Paired(served, len(served.losses(served.history))),
                champion: _Paired(score, len(score.losses(score.history))),
            },
            tests=self._tests.of(_SERVED_COPY),
        )
        if decision is None:
            return None
        evidence = {**decision.evidence, "served_version": self._champion_version}
        return Decision(
            kind="refresh",
            candidate=champion,
            reason=f"refresh of champion {champion!r}: {decision.reason}",
            evidence=evidence,
        )

    def _quarantine_candidate(
        self, name: str, stage: str, error: Exception, source: str, position: int
    ) -> None:
        reason = (
            f"{type(error).__name__} while {stage} event {self.events + 1} "
            f"(source {source!r}, position {position}): {error}"
        )
        self._quarantine[name] = reason[:_REASON_CHARS]
        self._tests.forget(name)
        if name == self.champion:
            self._vacate(f"champion {name!r} was quarantined at event {self.events + 1}")
        self._refresh()

    def _vacate(self, why: str) -> None:
        self.champion = None
        self._vacated = why
        self._tests.clear()

    def _decide(self) -> Decision | None:
        policy = self.spec.policy
        vacant = self.champion is None and self._champion_version is not None
        if vacant and self._since_promotion < policy.cooldown:
            return None
        scores = self._competitors()
        # The configured champion is a cold-start choice, not one to impose on a vacant title.
        preferred = self.spec.champion if self._champion_version is None else None
        return policy.decide(
            events=self.events,
            champion=self.champion,
            since_promotion=self._since_promotion,
            scores=scores,
            preferred=preferred if preferred in scores else None,
            tests=None if self.champion is None else self._tests.of(self.champion),
        )

    def _competitors(self) -> dict[str, _Paired]:
        """The live candidates with enough paired events to compete, in configuration order."""
        kept = {candidate.name: len(score.losses(score.history)) for candidate, score in self._live}
        if not kept:
            return {}
        # Every live candidate scored every event since it started, so the candidates that keep
        # at least `threshold` events share their last `threshold` events: a paired window.
        threshold = min(max(kept.values()), self.spec.policy.min_samples)
        return {
            name: _Paired(self._scores[name], n)
            for name, n in kept.items()
            if n >= threshold or name == self.champion
        }

    def _promote(self, decision: Decision, source: str) -> Promotion:
        if self._vacated is not None:
            decision = dataclasses.replace(decision, reason=f"{self._vacated}; {decision.reason}")
        previous_version = self._champion_version
        self.latest_version += 1
        candidate = self._by_name[decision.candidate]
        rollout = self.spec.rollout
        # The first version serves directly whatever the strategy: there is no stable to try
        # it beside.
        trial_kind = rollout.trial_kind if previous_version is not None else None
        promotion = Promotion(
            model=self.spec.name,
            version=self.latest_version,
            previous_version=previous_version,
            candidate=candidate.name,
            candidate_params=copy.deepcopy(candidate.params),
            kind=trial_kind or decision.kind,
            reason=decision.reason,
            evidence={**decision.evidence, "decision": decision.kind},
            lineage=self._lineage.describe(source, events=self.events),
            # A copy, because the live candidate keeps learning after the promotion.
            estimator=copy.deepcopy(candidate),
            rollout=None if trial_kind is None else {"fraction": rollout.trial_fraction},
        )
        if trial_kind is not None:
            # The champion stays until the trial is rolled out (see `adopt`).
            self._trial = promotion
            return promotion
        self._champion_version = self.latest_version
        if decision.candidate != self.champion:
            self._tests.clear()
        self.champion = self._served = decision.candidate
        self.champion_reason = decision.reason
        self._vacated = None
        self._since_promotion = 0
        # A copy of its own: the promotion's estimator is the caller's to serialise.
        self._serve(copy.deepcopy(candidate))
        return promotion

    def _serve(self, estimator: Candidate | None) -> None:
        """Test `estimator` as the served copy from the next event on, with a fresh score."""
        self._served_copy = estimator
        self._served_score = self._new_score()
        self._served_failure = None
        self._tests.forget(_SERVED_COPY)

    def candidate(self, name: str) -> Candidate:
        """The live candidate called `name` (it goes on learning; promotions serve copies)."""
        return self._by_name[name]

    def last_position(self, source: str) -> int | None:
        """Position of the last event learned from `source`, None if none was."""
        return self._lineage.last_position(source)

    def skip(self, source: str, position: int) -> None:
        """Note in the lineage that the model's event at `position` of `source` was not learned
        (a duplicate the caller dropped): whoever replays the source must leave it out too."""
        self._lineage.skipped(source, position)

    @property
    def lineage(self) -> dict[str, Any]:
        """The lineage of the trainer's state now, as a promotion would carry it (see
        `trainers.lineage`)."""
        return self._lineage.describe(None, events=self.events)

    def adopt(
        self,
        version: int,
        candidate: str,
        reason: str,
        *,
        estimator: Candidate | None = None,
        origin: Mapping[str, Any] | None = None,
    ) -> None:
        """Make `version` of `candidate` serve as stable: an operator's promote, a rollout or a
        rollback, as the registry says.

        Parameters
        ----------
        version
            The version that serves now.
        candidate
            Its candidate's name.
        reason
            Why, for `report` (e.g. ``"rollback by alice: ..."``).
        estimator
            The version's frozen artifact, as served. It becomes the served copy. Unless
            `version` is the pending trial (a rollout of the trainer's own trial, whose live
            candidate is that version and has been learning since), a copy of it also replaces
            the live candidate `candidate`, whose rolling and cumulative scores restart from the
            next event (its `learned` count goes on): the champion is then what serves, and its
            metrics describe it. Without it, the served copy is the trial's own copy for a
            rollout, stays as it is when `version` already serves, and is otherwise unknown
            (not tested) until another version serves; the live candidate is kept.
        origin
            What the caller knows of where the decision came from (a worker's registry
            offset), kept as it is in the lineage's ``adoptions``, with the events learned so
            far, so that a replay adopts the same version at the same point.

        Any adoption ends the pending trial (a rollback of the trial adopts the stable version
        again). The version counter never goes back, so the next promotion gets a fresh number;
        the cooldown restarts, so the policy does not immediately overrule the operator or the
        guardrail. A candidate that does not train (quarantined, not configured any more, or
        whose adopted artifact was built with other parameters than configured now) serves, but
        leaves the title vacant.
        """
        self._lineage.adopted(
            events=self.events,
            version=version,
            candidate=candidate,
            reason=reason,
            artifact=estimator is not None,
            origin=origin,
        )
        trial, self._trial = self._trial, None
        rolled_out = trial is not None and trial.version == version
        if estimator is None and trial is not None and rolled_out:
            estimator = copy.deepcopy(trial.estimator)
        if estimator is not None:
            self._serve(estimator)
        elif version != self._champion_version:
            self._serve(None)
        self._served = candidate
        self._champion_version = version
        self.champion_reason = reason
        self.latest_version = max(version, self.latest_version)
        self._since_promotion = 0
        # What serves changed hands: the champion's tests start over with it.
        self._tests.clear()
        configured = self._digests.get(candidate)
        if candidate in self._quarantine:
            self._vacate(f"adopted champion {candidate!r} is quarantined")
        elif configured is None:
            self._vacate(f"adopted champion {candidate!r} is not a configured candidate")
        elif (
            estimator is not None
            and not rolled_out
            and candidate_digest(estimator.params) != configured
        ):
            self._vacate(
                f"adopted champion {candidate!r} was built with other parameters than the "
                "configured candidate of that name"
            )
        else:
            if estimator is not None and not rolled_out:
                self._replace(candidate, copy.deepcopy(estimator))
            self.champion = candidate
            self._vacated = None

    def _replace(self, name: str, estimator: Candidate) -> None:
        """Put `estimator` in place of the live candidate `name`, with a fresh score."""
        self._candidates = [estimator if c.name == name else c for c in self._candidates]
        self._scores[name] = self._new_score()
        if self._drift is not None:
            self._drift.forget(name)
        self._tests.forget(name)
        self._refresh()

    def report(self) -> dict[str, Any]:
        """Progress summary: what serves, the version counter, quarantines, per-candidate metrics.

        ``version`` and ``champion`` name what serves (the last promoted or adopted version and
        its candidate), ``latest_version`` the last version number issued, and
        ``champion_vacated`` why the title is vacant (None when it is not). ``trial`` is the
        pending trial (``version``, ``candidate``, ``kind``, ``rollout``) or None. ``served`` is
        the served copy's score (``version``, ``candidate``, ``n``, ``rolling``, ``cumulative``,
        ``failed``: why it is no longer tested, or None) and ``staleness``: the primary
        ``metric`` of the live ``champion`` and of the ``served`` copy over the last ``events``
        both scored (at most ``window``); it is None when the trainer has no served copy.
        """
        trial = self._trial
        return {
            "model": self.spec.name,
            "events": self.events,
            "champion": self._served,
            "champion_reason": self.champion_reason,
            "version": self._champion_version,
            "latest_version": self.latest_version,
            "champion_vacated": self._vacated,
            "quarantined": dict(self._quarantine),
            "candidates": {
                name: {"n": score.n, "rolling": score.rolling(), "cumulative": score.cumulative()}
                for name, score in self._scores.items()
            },
            "trial": None
            if trial is None
            else {
                "version": trial.version,
                "candidate": trial.candidate,
                "kind": trial.kind,
                "rollout": trial.rollout,
            },
            "served": self._served_report(),
        }

    def _served_report(self) -> dict[str, Any] | None:
        if self._served_copy is None:
            return None
        score = self._served_score
        metric = self.spec.policy.metric
        live = self._scores.get(self.champion) if self.champion is not None else None
        staleness = None
        if live is not None and self.champion == self._served:
            # The last events both scored: the served copy's score restarted when it began to
            # serve, the champion's may have restarted since (an adoption).
            events = min(self.spec.window, score.n, live.n)
            staleness = {
                "metric": metric,
                "higher_is_better": HIGHER_IS_BETTER[metric],
                "events": events,
                "champion": live.recent(events)[metric] if events else None,
                "served": score.recent(events)[metric] if events else None,
            }
        return {
            "version": self._champion_version,
            "candidate": self._served,
            "n": score.n,
            "rolling": score.rolling(),
            "cumulative": score.cumulative(),
            "failed": self._served_failure,
            "staleness": staleness,
        }

    def snapshot(self) -> bytes:
        """The trainer's whole state as bytes (a pickle; keep it where only workers write)."""
        return dumps(self)

    @classmethod
    def restore(
        cls, blob: bytes, spec: ModelSpec, *, reset: Collection[str] = ()
    ) -> tuple[ModelTrainer, RestoreChanges]:
        """Rebuild a trainer from `snapshot` bytes under the current specification.

        Parameters
        ----------
        blob
            Bytes from `snapshot` (unpickled: check where they come from first).
        spec
            The model's specification now; it wins over the one the snapshot was taken with.
        reset
            Names of candidates to start fresh if they changed or are quarantined; others named
            here are kept (see `RestoreChanges.reset_ignored`).

        Raises `SnapshotError` when the bytes hold no trainer of this snapshot format,
        `ConfigError` when `spec` is another model's or changes the task, and
        `CandidateChangedError` naming every changed candidate not in `reset`.
        """
        trainer = pickle.loads(blob)
        if not isinstance(trainer, cls):
            raise SnapshotError(f"snapshot holds a {type(trainer).__name__}, not a {cls.__name__}")
        found = getattr(trainer, "_format", 1)
        if found in _UPGRADABLE_FORMATS:
            trainer._upgrade(found)
        elif found != _SNAPSHOT_FORMAT:
            raise SnapshotError(
                f"snapshot of model {trainer.spec.name!r} has format {found}, this driftline "
                f"reads format {_SNAPSHOT_FORMAT}; start the model afresh"
            )
        changes = trainer._reconfigure(spec, frozenset(reset))
        return trainer, changes

    def _upgrade(self, found: int) -> None:
        """Bring a trainer of format `found` to the current format.

        Format 2: no served copy (its artifact is not in the snapshot) until the next version
        serves, no trial, learned counts from scores. Formats 2 and 3: no drift monitor yet
        (`_reconfigure` starts one if the specification asks for it) and no detections. Formats
        2 to 4: a lineage that knows only the first and last positions learned, and says the
        model is not verifiable; no paired tests of promotions (they start at the next event,
        in the first round).
        """
        if found == 2:
            self._learned = {name: score.n for name, score in self._scores.items()}
            self._served_copy = None
            self._served_score = self._new_score()
            self._served_failure = None
            self._trial = None
        if found in (2, 3):
            self._drift = None
            self._detections = []
        self._responder = DriftResponder(self.spec.name)
        self._notices = []
        self._tests = PairedTests(self.spec.policy.alpha)
        self._lineage = Lineage.untracked(self.spec, vars(self).pop("_positions"), self.events)
        self._format = _SNAPSHOT_FORMAT

    def _reconfigure(self, spec: ModelSpec, reset: frozenset[str]) -> RestoreChanges:
        old = self.spec
        if spec.name != old.name:
            raise ConfigError(
                f"a snapshot of model {old.name!r} cannot be restored as {spec.name!r}"
            )
        if spec.task != old.task:
            raise ConfigError(
                f"model {spec.name!r}: task changed from {old.task} to {spec.task}; a checkpoint "
                "cannot change task (give the model a new name)"
            )
        digests = {table["name"]: candidate_digest(table) for table in spec.candidates}
        # A reset copy outlives a restart while what it copies is configured unchanged.
        copies = [
            table
            for table in self._responder.copy_tables({t["name"]: t for t in spec.candidates})
            if self._digests.get(table["name"]) == candidate_digest(table)
        ]
        changed = {
            name for name, digest in digests.items() if self._digests.get(name, digest) != digest
        }
        refused = [name for name in digests if name in changed and name not in reset]
        if refused:
            targets = [f"{spec.name}/{name}" for name in refused]
            raise CandidateChangedError(
                f"model {spec.name!r}: candidates {targets} changed since the checkpoint, whose "
                "state was learned with their old parameters; restore the old parameters, rename "
                "them, or reset them (driftline worker --reset-candidate MODEL/NAME)",
                candidates=targets,
            )
        self.spec = spec
        digests.update((table["name"], candidate_digest(table)) for table in copies)
        started, was_reset, ignored = [], [], []
        candidates = []
        for table in (*spec.candidates, *copies):
            name = table["name"]
            kept = self._by_name.get(name)
            if kept is not None and name in reset:
                if name in changed or name in self._quarantine:
                    kept = None
                    was_reset.append(name)
                else:
                    ignored.append(name)
            elif kept is None:
                started.append(name)
            if kept is None:
                kept = build_candidate(table, spec.task)
                self._scores[name] = self._new_score()
                self._learned[name] = 0
                self._quarantine.pop(name, None)
            candidates.append(kept)
        dropped = [name for name in self._by_name if name not in digests]
        self._responder.forget(set(dropped))
        for name in dropped:
            del self._scores[name]
            del self._learned[name]
            self._quarantine.pop(name, None)
        history = max(spec.window, spec.policy.min_samples)
        for score in (*self._scores.values(), self._served_score):
            _resize(score, spec.window, history)
        # In configuration order, which breaks the policy's ties.
        self._scores = {candidate.name: self._scores[candidate.name] for candidate in candidates}
        self._learned = {candidate.name: self._learned[candidate.name] for candidate in candidates}
        self._candidates = candidates
        self._digests = digests
        if spec.drift != old.drift or self._drift is None:
            self._drift = None if spec.drift is None else DriftMonitor(spec.drift)
        else:
            for name in (*dropped, *was_reset):
                self._drift.forget(name)
        if _test_settings(spec) != _test_settings(old):
            # Losses on another scale or another level: the old evidence does not carry over.
            self._tests = PairedTests(spec.policy.alpha)
        for name in (*dropped, *was_reset):
            self._tests.forget(name)
        vacated = None
        if self.champion in dropped or self.champion in was_reset:
            vacated = self.champion
            why = "dropped from the configuration" if vacated in dropped else "reset"
            self._vacate(f"champion {vacated!r} was {why}")
        self._refresh()
        self._lineage.configured(spec, events=self.events, reset=was_reset)
        return RestoreChanges(
            started=tuple(started),
            dropped=tuple(dropped),
            reset=tuple(was_reset),
            reset_ignored=tuple(ignored),
            reset_unknown=tuple(sorted(reset - set(digests))),
            vacated=vacated,
            settings=_setting_changes(old, spec),
        )


def _resize(score: PrequentialScore, window: int, history: int) -> None:
    """Bound `score` by a new window and history, keeping its most recent events."""
    if (score.window, score.history) == (window, history):
        return
    # The per-event deques are sized at construction; rebuild each at the new bound.
    for name, value in list(vars(score).items()):
        if isinstance(value, deque):
            setattr(score, name, deque(value, maxlen=history))
    score.window, score.history = window, history


def _test_settings(spec: ModelSpec) -> tuple[Any, ...]:
    """The settings that give the paired tests' losses and level their meaning."""
    policy = spec.policy
    return policy.metric, policy.loss_scale, policy.alpha


def _setting_changes(old: ModelSpec, new: ModelSpec) -> tuple[str, ...]:
    before, after = _settings(old), _settings(new)
    return tuple(
        f"{key}: {before[key]!r} -> {after[key]!r}" for key in after if before[key] != after[key]
    )


def _settings(spec: ModelSpec) -> Mapping[str, Any]:
    """The settings of `spec` that shape its trainer, by dotted name (candidates aside)."""
    return {
        "window": spec.window,
        "champion": spec.champion,
        "refresh_every": spec.refresh_every,
        "drift": spec.drift,
        **{f"policy.{k}": v for k, v in dataclasses.asdict(spec.policy).items()},
        **{f"rollout.{k}": v for k, v in dataclasses.asdict(spec.rollout).items()},
    }
