"""What a model's state was learned from, exactly enough to learn it again bit for bit.

A `Lineage` lives inside a `trainers.trainer.ModelTrainer` (and pickles with it). The trainer
tells it of every event it learns (`learned`), of every event of the model it saw and did not
learn (`skipped`: a label that does not fit, or a duplicate the caller dropped), of every version
it adopted from outside (`adopted`: an operator's promote, a rollout, a rollback) and of every
configuration it ran under (`configured`). `describe` turns that into the ``lineage`` of a
registry record:

* per source (a Kafka worker's ``"topic[partition]"``): the first and last positions learned,
  the events learned, ``learned_sha256`` (a running SHA-256 over the positions learned, in
  order) and ``skipped`` (the count, the digest and, when short, the positions of the model's
  events that were not learned);
* ``adoptions``: the versions adopted, each with the number of events learned when it was
  (``events``), whether its artifact came with it, and what the caller said of its origin
  (a worker's registry offset);
* ``configurations``: every configuration the trainer ran under, as a table `ModelSpec.from_dict
  <trainers.spec.ModelSpec.from_dict>` reads back, with its digest, the events learned when it
  took effect and the candidates reset then; adoptions and configurations carry a ``step``
  numbering them together, in the order they happened (several may follow the same event);
* ``verifiable`` and, when false, ``unverifiable``: why learning again cannot give the same
  bytes (an unseeded random candidate, a state learned before lineage was kept, a configuration
  that does not read back as itself).

Only the positions are kept, never the events: the data stays where it is (a Kafka topic), and
the digests let whoever replays it check that they selected exactly the same events.

Parameters
----------
spec
    The configuration the trainer starts with.

Examples
--------
>>> from trainers.lineage import Lineage
>>> from trainers.spec import ModelSpec
>>> spec = ModelSpec.from_dict("sea", {
...     "task": "classification",
...     "candidates": [{"name": "nb", "river": "naive_bayes.GaussianNB"}],
... })
>>> lineage = Lineage(spec)
>>> for position in (3, 4, 6):
...     lineage.learned("labeled[0]", position)
>>> lineage.skipped("labeled[0]", 5)
>>> lineage.adopted(events=3, version=1, candidate="nb", reason="manual", artifact=True,
...                 origin={"registry_offset": 12})
>>> record = lineage.describe("labeled[0]", events=3)
>>> record["first_offset"], record["last_offset"], record["events"], record["verifiable"]
(3, 6, 3, True)
>>> record["ranges"][0]["skipped"]["offsets"], record["adoptions"][0]["registry_offset"]
([5], 12)
>>> ModelSpec.from_dict("sea", record["configurations"][0]["table"]) == spec
True

An unseeded random candidate cannot be learned again into the same bytes:

>>> spec = ModelSpec.from_dict("sea", {
...     "task": "classification",
...     "candidates": [{"name": "hat", "river": "tree.HoeffdingAdaptiveTreeClassifier"}],
... })
>>> Lineage(spec).describe(None, events=0)["unverifiable"]
["candidate 'hat' is random and unseeded (seed=None): give it a seed"]

References
----------
[^1]: Gama, J., Sebastiao, R. and Rodrigues, P. P., 2013. On evaluating stream learning
    algorithms. Machine Learning, 90(3), pp. 317-346 (prequential evaluation: the order of the
    events is part of what a model learned).

"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from trainers.candidates import RiverCandidate, SklearnCandidate, build_candidate
from trainers.errors import ConfigError
from trainers.spec import ModelSpec

__all__ = [
    "LINEAGE_FORMAT",
    "Lineage",
    "config_digest",
    "nondeterminism",
    "positions_digest",
    "spec_table",
]

LINEAGE_FORMAT = 1
"""The version of the ``lineage`` fields `Lineage.describe` writes (``format`` in records)."""
# Skipped positions listed in full up to this many; beyond, their count and digest stand.
_LISTED_SKIPS = 100
_DIGEST_SEED = bytes(32)


class _SourceLog:
    """Positions learned from, and skipped in, one source."""

    def __init__(self, position: int) -> None:
        self.first = self.last = position
        self.events = 0
        self.learned_digest = _DIGEST_SEED
        self.skipped = 0
        self.skipped_digest = _DIGEST_SEED
        # Only the first ones: a stream of bad labels must not grow every snapshot forever.
        self.skips: list[int] = []

    def skip(self, position: int) -> None:
        self.skipped += 1
        self.skipped_digest = _chain(self.skipped_digest, position)
        if self.skipped <= _LISTED_SKIPS:
            self.skips.append(position)

    def describe(self, name: str) -> dict[str, Any]:
        skipped: dict[str, Any] = {"count": self.skipped, "sha256": self.skipped_digest.hex()}
        if self.skipped <= _LISTED_SKIPS:
            skipped["offsets"] = list(self.skips)
        return {
            "source": name,
            "first_offset": self.first,
            "last_offset": self.last,
            "events": self.events,
            "learned_sha256": self.learned_digest.hex(),
            "skipped": skipped,
        }


def _chain(digest: bytes, position: int) -> bytes:
    """The running digest `digest` extended by `position`: SHA-256 of the two."""
    return hashlib.sha256(digest + position.to_bytes(8, "big", signed=True)).digest()


def positions_digest(positions: Collection[int]) -> str:
    """The hex running digest of `positions`, in order (what ``learned_sha256`` holds).

    >>> positions_digest([]) == bytes(32).hex()
    True
    """
    digest = _DIGEST_SEED
    for position in positions:
        digest = _chain(digest, position)
    return digest.hex()


class Lineage:
    """The lineage of one model's trainer (see the module docstring)."""

    def __init__(self, spec: ModelSpec) -> None:
        self._sources: dict[str, _SourceLog] = {}
        self._adoptions: list[dict[str, Any]] = []
        self._configurations: list[dict[str, Any]] = []
        self._unverifiable: list[str] = []
        self.configured(spec, events=0)

    @classmethod
    def untracked(cls, spec: ModelSpec, spans: Mapping[str, list[int]], events: int) -> Lineage:
        """The lineage of a trainer restored from a snapshot older than lineage: its first and
        last positions are known, the rest is not, so it is never verifiable."""
        lineage = cls(spec)
        for name, (first, last) in spans.items():
            log = lineage._sources[name] = _SourceLog(first)
            log.last = last
        lineage._unverifiable.append(
            f"its first {events} events were learned before driftline recorded complete lineage"
        )
        return lineage

    def learned(self, source: str, position: int) -> None:
        """Note that the event at `position` of `source` was learned."""
        log = self._sources.get(source)
        if log is None:
            log = self._sources[source] = _SourceLog(position)
        log.last = position
        log.events += 1
        log.learned_digest = _chain(log.learned_digest, position)

    def skipped(self, source: str, position: int) -> None:
        """Note that the model's event at `position` of `source` was seen but not learned."""
        log = self._sources.get(source)
        if log is None:
            # Before the first event learned: outside every range replayed, nothing to note.
            return
        log.skip(position)

    def adopted(
        self,
        *,
        events: int,
        version: int,
        candidate: str,
        reason: str,
        artifact: bool,
        origin: Mapping[str, Any] | None = None,
    ) -> None:
        """Note that `version` was adopted after `events` events, with its artifact or not."""
        self._adoptions.append(
            {
                "events": events,
                "step": self._next_step(),
                "version": version,
                "candidate": candidate,
                "reason": reason,
                "artifact": artifact,
                **(origin or {}),
            }
        )

    def configured(self, spec: ModelSpec, *, events: int, reset: Collection[str] = ()) -> None:
        """Note that `spec` applies from event `events` on, with the candidates `reset` fresh."""
        table = spec_table(spec)
        digest = config_digest(table)
        if self._configurations and self._configurations[-1]["sha256"] == digest and not reset:
            return
        self._configurations.append(
            {
                "events": events,
                "step": self._next_step(),
                "sha256": digest,
                "table": table,
                "reset": sorted(reset),
            }
        )
        self._unverifiable.extend(
            reason for reason in _config_problems(spec, table) if reason not in self._unverifiable
        )

    def _next_step(self) -> int:
        """The order of an adoption or a configuration among both: several may share an event."""
        return len(self._adoptions) + len(self._configurations)

    def last_position(self, source: str) -> int | None:
        """Position of the last event learned from `source`, None if none was."""
        log = self._sources.get(source)
        return None if log is None else log.last

    @property
    def spans(self) -> dict[str, list[int]]:
        """The first and last positions learned, per source."""
        return {name: [log.first, log.last] for name, log in self._sources.items()}

    def describe(self, source: str | None, *, events: int) -> dict[str, Any]:
        """The ``lineage`` of a registry record issued at an event of `source`, after `events`
        events learned in all.

        ``source``, ``first_offset`` and ``last_offset`` describe `source` (the keys the
        registry's readers have always read), ``sources`` every source when there are several;
        the other fields are described in the module docstring.
        """
        ranges = [log.describe(name) for name, log in sorted(self._sources.items())]
        lineage: dict[str, Any] = {"format": LINEAGE_FORMAT}
        if source is not None and source in self._sources:
            log = self._sources[source]
            lineage.update(source=source, first_offset=log.first, last_offset=log.last)
        lineage["events"] = events
        if len(ranges) > 1:
            lineage["sources"] = [
                {key: entry[key] for key in ("source", "first_offset", "last_offset")}
                for entry in ranges
            ]
        lineage.update(
            ranges=ranges,
            adoptions=[dict(adoption) for adoption in self._adoptions],
            configurations=[dict(configuration) for configuration in self._configurations],
            verifiable=not self._unverifiable,
        )
        if self._unverifiable:
            lineage["unverifiable"] = list(self._unverifiable)
        return lineage


def spec_table(spec: ModelSpec) -> dict[str, Any]:
    """`spec` as a configuration table (JSON-ready) that `ModelSpec.from_dict` reads back.

    Unset (None) settings are left out, and the label horizon is written in seconds.
    """
    fields = dataclasses.asdict(spec)
    del fields["name"]
    # A candidate's own None parameters are settings (``penalty = None``), not unset ones.
    candidates = fields.pop("candidates")
    return {
        **_without_none(fields),
        "candidates": list(candidates),
        "label_horizon": f"{spec.label_horizon!r}s",
    }


def config_digest(table: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a configuration table's canonical JSON."""
    text = json.dumps(table, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def nondeterminism(spec: ModelSpec) -> list[str]:
    """Why learning `spec`'s candidates twice on the same events may give different bytes:
    one line per candidate with an unseeded random generator (river's ``seed=None``,
    scikit-learn's ``random_state=None``)."""
    problems = []
    for table in spec.candidates:
        candidate = build_candidate(table, spec.task)
        if isinstance(candidate, RiverCandidate):
            unseeded = "seed" in _unset_keys(candidate.model._get_params())
            setting = "seed=None"
        elif isinstance(candidate, SklearnCandidate):
            unseeded = "random_state" in _unset_keys(candidate.estimator.get_params())
            setting = "random_state=None"
        else:
            continue
        if unseeded:
            problems.append(
                f"candidate {candidate.name!r} is random and unseeded ({setting}): give it a "
                f"{setting.split('=')[0]}"
            )
    return problems


def _config_problems(spec: ModelSpec, table: Mapping[str, Any]) -> list[str]:
    try:
        read_back = ModelSpec.from_dict(spec.name, table)
    except ConfigError as error:
        return [f"its configuration does not read back: {error}"]
    if read_back != spec:
        return ["its configuration does not read back as itself"]
    return nondeterminism(spec)


def _unset_keys(params: Any) -> Iterator[str]:
    """The keys set to None anywhere in river's or scikit-learn's nested parameters."""
    if isinstance(params, Mapping):
        for key, value in params.items():
            if value is None:
                yield key
            else:
                yield from _unset_keys(value)
    elif isinstance(params, tuple | list):
        for item in params:
            yield from _unset_keys(item)


def _without_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, tuple | list):
        return [_without_none(item) for item in value]
    return value
