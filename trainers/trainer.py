"""The per-model trainer a worker holds: prequential learning, lineage and promotions.

`ModelTrainer.learn` is the per-event hot path. For each event it

1. asks every candidate for its prediction (and class probabilities), and scores it — the
   candidates are *tested* on the event before they learn it, so the scores are honest
   out-of-sample estimates (prequential evaluation);
2. lets every candidate learn the event;
3. records the event's lineage (topic, partition, offsets);
4. every ``policy.every`` events (and at ``policy.warmup``) asks the `PromotionPolicy` whether to
   promote, and on a decision issues the next version as a `Promotion`.

The trainer is pure: no I/O, no clock, no randomness beyond the candidates' seeds. Its whole state
pickles (`snapshot` / `restore`), and a restored trainer continues exactly as the original would.

Examples
--------
>>> from trainers.spec import ModelSpec
>>> from trainers.synthetic import drift_stream
>>> from trainers.trainer import ModelTrainer
>>> spec = ModelSpec.from_dict("sea", {
...     "task": "classification",
...     "champion": "nb",
...     "candidates": [
...         {"name": "nb", "river": "naive_bayes.GaussianNB"},
...         {"name": "lr", "river": "StandardScaler | LogisticRegression"},
...     ],
...     "policy": {"warmup": 100, "every": 100},
... })
>>> trainer = ModelTrainer(spec)
>>> stream = drift_stream("sea", n=300, drift_at=1000, seed=1)
>>> promotions = [
...     promotion
...     for offset, (x, y) in enumerate(stream)
...     if (promotion := trainer.learn(x, y, topic="sea", partition=0, offset=offset))
... ]
>>> [(p.version, p.kind, p.candidate) for p in promotions]
[(1, 'initial', 'nb')]
>>> promotions[0].lineage
{'topic': 'sea', 'partition': 0, 'first_offset': 0, 'last_offset': 99, 'events': 100}
>>> trainer.champion, trainer.version, trainer.last_offset("sea", 0), trainer.learned
('nb', 1, 299, {'nb': 300, 'lr': 300})

"""

from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass
from typing import Any

from trainers.candidates import Candidate, build_candidate
from trainers.errors import ConfigError, LabelError
from trainers.metrics import PrequentialScore
from trainers.policy import Decision
from trainers.serialization import dumps
from trainers.spec import ModelSpec, check_label

__all__ = ["ModelTrainer", "Promotion"]


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
        ``"initial"`` or ``"challenger"``.
    reason
        One human-readable sentence.
    evidence
        The policy's evidence (window, metrics, paired test, thresholds).
    lineage
        What it learned from: ``topic``, ``partition``, ``first_offset``, ``last_offset`` of the
        partition that triggered the promotion, ``events`` learned in total, and, when the model
        learns from several partitions, ``partitions`` with each one's offsets.
    estimator
        A copy of the promoted candidate, frozen at promotion time, to serialise and serve.

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


class ModelTrainer:
    """Trains every candidate of one model and promotes champions.

    Parameters
    ----------
    spec
        The model's validated specification.

    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.champion: str | None = None
        self.champion_reason: str | None = None
        self.version = 0
        self.events = 0
        self._champion_version: int | None = None
        self._since_promotion = 0
        self._candidates = [build_candidate(c, spec.task) for c in spec.candidates]
        self._by_name = {candidate.name: candidate for candidate in self._candidates}
        # History reaches back min_samples events, so that challengers can be tested that far.
        history = max(spec.window, spec.policy.min_samples)
        self._scores = {
            candidate.name: PrequentialScore(spec.task, spec.window, history)
            for candidate in self._candidates
        }
        self._scored = [(candidate, self._scores[candidate.name]) for candidate in self._candidates]
        self._classification = spec.task == "classification"
        # A label outside any candidate's declared classes would break that candidate mid-event,
        # after the others had already learned it; refuse it before anyone sees it.
        declared = [frozenset(c.classes) for c in self._candidates if c.classes is not None]
        self._allowed_labels = frozenset.intersection(*declared) if declared else None
        self._offsets: dict[tuple[str, int], list[int]] = {}

    @property
    def learned(self) -> dict[str, int]:
        """Events learned by each candidate."""
        # Every candidate learns every event, so the counts are equal by construction.
        return {candidate.name: self.events for candidate in self._candidates}

    def learn(
        self, features: dict, label: Any, *, topic: str, partition: int, offset: int
    ) -> Promotion | None:
        """Test every candidate on the event, then train them on it; maybe promote.

        Raises `LabelError` (before any candidate sees the event) when the label does not fit
        the model. Skipping events already learned is the caller's job (see `last_offset`).
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
            raise LabelError(f"model {self.spec.name!r}: {problem}")
        if self._classification:
            for candidate, score in self._scored:
                prediction, proba = candidate.predict_with_proba(features)
                score.update(label, prediction, proba)
        else:
            for candidate, score in self._scored:
                score.update(label, candidate.predict_one(features))
        for candidate in self._candidates:
            candidate.learn_one(features, label)
        self.events += 1
        self._since_promotion += 1
        span = self._offsets.get((topic, partition))
        if span is None:
            self._offsets[(topic, partition)] = [offset, offset]
        else:
            span[1] = offset
        if not self.spec.policy.due(self.events):
            return None
        decision = self.spec.policy.decide(
            events=self.events,
            champion=self.champion,
            since_promotion=self._since_promotion,
            scores=self._scores,
            preferred=self.spec.champion,
        )
        return None if decision is None else self._promote(decision, topic, partition)

    def _promote(self, decision: Decision, topic: str, partition: int) -> Promotion:
        previous_version = self._champion_version
        self.version += 1
        self._champion_version = self.version
        self.champion = decision.candidate
        self.champion_reason = decision.reason
        self._since_promotion = 0
        candidate = self._by_name[decision.candidate]
        return Promotion(
            model=self.spec.name,
            version=self.version,
            previous_version=previous_version,
            candidate=candidate.name,
            candidate_params=copy.deepcopy(candidate.params),
            kind=decision.kind,
            reason=decision.reason,
            evidence=decision.evidence,
            lineage=self._lineage(topic, partition),
            # A copy, because the live candidate keeps learning after the promotion.
            estimator=copy.deepcopy(candidate),
        )

    def _lineage(self, topic: str, partition: int) -> dict[str, Any]:
        first_offset, last_offset = self._offsets[(topic, partition)]
        lineage: dict[str, Any] = {
            "topic": topic,
            "partition": partition,
            "first_offset": first_offset,
            "last_offset": last_offset,
            "events": self.events,
        }
        if len(self._offsets) > 1:
            lineage["partitions"] = [
                {"topic": t, "partition": p, "first_offset": first, "last_offset": last}
                for (t, p), (first, last) in sorted(self._offsets.items())
            ]
        return lineage

    @property
    def champion_version(self) -> int | None:
        """The version the champion serves as (an operator may have set an older one)."""
        return self._champion_version

    def candidate(self, name: str) -> Candidate:
        """The live candidate called `name` (it goes on learning; promotions serve copies)."""
        return self._by_name[name]

    def last_offset(self, topic: str, partition: int) -> int | None:
        """Offset of the last event learned from `topic`/`partition`, None if none was."""
        span = self._offsets.get((topic, partition))
        return None if span is None else span[1]

    def adopt(self, version: int, candidate: str, reason: str) -> None:
        """Make `candidate` the champion at `version`, as an operator's promotion or rollback.

        The version counter never goes back, so the next promotion gets a fresh number; the
        cooldown restarts, so the policy does not immediately overrule the operator.
        """
        if candidate not in self._by_name:
            raise ConfigError(
                f"model {self.spec.name!r}: no candidate {candidate!r}; "
                f"candidates: {list(self._by_name)}"
            )
        self.champion = candidate
        self.champion_reason = reason
        self._champion_version = version
        self.version = max(version, self.version)
        self._since_promotion = 0

    def report(self) -> dict[str, Any]:
        """Progress summary: per candidate rolling and cumulative metrics, champion, version."""
        return {
            "model": self.spec.name,
            "events": self.events,
            "champion": self.champion,
            "champion_reason": self.champion_reason,
            "version": self.version,
            "candidates": {
                name: {"n": score.n, "rolling": score.rolling(), "cumulative": score.cumulative()}
                for name, score in self._scores.items()
            },
        }

    def snapshot(self) -> bytes:
        """The trainer's whole state as bytes (a pickle; keep it where only workers write)."""
        return dumps(self)

    @classmethod
    def restore(cls, blob: bytes) -> ModelTrainer:
        """Rebuild a trainer from `snapshot` bytes; it continues exactly where it stopped."""
        trainer = pickle.loads(blob)
        if not isinstance(trainer, cls):
            raise TypeError(f"snapshot holds a {type(trainer).__name__}, not a {cls.__name__}")
        return trainer
