"""Artifact retention: which versions' artifacts may leave Redis, and removing them.

Every version a trainer publishes stores its artifact in Redis (:mod:`streams.registry.artifacts`)
and nothing else ever deletes one. :func:`select` decides, from the registry's records alone,
what ``driftline registry prune-artifacts`` removes; :func:`prune` removes it.

A version's artifact goes when it is outside every rule of the :class:`Retention`: not among its
model's ``keep`` newest versions, and issued longer than ``older_than`` ago (a rule left out lets
every version go). Whatever the rules say, it stays when its version

- serves (the stable version) or is on trial (a canary or a shadow);
- is where a rollback from the stable version goes by default
  (:func:`~streams.registry.records.version_before`);
- is the target of a manual record (an operator's promote, rollback, trial or rollout, or the
  guardrail's): someone chose it once, and may again;

and an artifact that a version kept (of any model) names stays too: artifacts are
content-addressed, so two versions may share one key.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis

from streams.registry.records import (
    INFORMATIONAL_KINDS,
    ArtifactRef,
    ModelVersion,
    serving_state,
    version_before,
)

__all__ = ["Pruning", "Removal", "Retention", "Verdict", "prune", "select"]


@dataclass(frozen=True)
class Retention:
    """The rules: keep each model's ``keep`` newest versions, and those younger than
    ``older_than``; at least one of them.

    >>> Retention(keep=3).describe(), Retention(keep=3, older_than=timedelta(days=90)).describe()
    ('beyond the 3 newest', 'beyond the 3 newest and older than 90d')
    """

    keep: int | None = None
    older_than: timedelta | None = None

    def __post_init__(self) -> None:
        if self.keep is None and self.older_than is None:
            raise ValueError("a retention needs a count to keep, an age, or both")
        if self.keep is not None and self.keep < 0:
            raise ValueError(f"the count of versions to keep is 0 or more, not {self.keep}")

    def describe(self) -> str:
        """What a removed version is, in words."""
        rules = [f"beyond the {self.keep} newest"] if self.keep is not None else []
        if self.older_than is not None:
            rules.append(f"older than {_age(self.older_than)}")
        return " and ".join(rules)


@dataclass(frozen=True)
class Verdict:
    """What retention does with one version's artifact: ``kept`` says why it stays (None: it
    goes)."""

    model: str
    version: int
    artifact: ArtifactRef
    created_at: str
    kept: str | None

    @property
    def removed(self) -> bool:
        return self.kept is None


def select(
    records: Iterable[ModelVersion],
    retention: Retention,
    *,
    now: datetime,
    models: Collection[str] | None = None,
) -> list[Verdict]:
    """The verdict on the artifact of every version of ``models`` (default: every model), from
    all the registry's ``records`` in log order, newest version first per model.

    Every model's records are needed even when ``models`` names one: another model's kept
    version may share an artifact.

    >>> ref = lambda n: ArtifactRef(key=f"a:{n}", sha256=str(n), size=1, signature="s")
    >>> log = [ModelVersion("sea", v, "challenger", {}, None, "", {}, {}, ref(v),
    ...        created_at="2024-01-01T00:00:00+00:00") for v in (1, 2, 3, 4)]
    >>> now = datetime(2024, 6, 1, tzinfo=UTC)
    >>> [(v.version, v.kept) for v in select(log, Retention(keep=1), now=now)]
    [(4, 'serves'), (3, 'a rollback goes back to it'), (2, None), (1, None)]
    """
    records = list(records)
    protected = _protected(records)
    issued: dict[str, dict[int, ModelVersion]] = {}
    for record in records:
        if not record.is_manual and record.kind not in INFORMATIONAL_KINDS:
            # The first record of a version is the trainer's; an operator's trial repeats it.
            issued.setdefault(record.model, {}).setdefault(record.version, record)
    verdicts: list[Verdict] = []
    for model, versions in issued.items():
        chosen = models is None or model in models
        for rank, version in enumerate(sorted(versions, reverse=True)):
            record = versions[version]
            kept = protected.get((model, version)) or (
                _within(retention, rank, record, now) if chosen else "not pruned now"
            )
            verdicts.append(Verdict(model, version, record.artifact, record.created_at, kept))
    # Content-addressed: an artifact goes only when no version that stays names it.
    staying = {v.artifact.key: v for v in verdicts if not v.removed}
    return [
        _sharing(verdict, staying) if verdict.removed else verdict
        for verdict in verdicts
        if models is None or verdict.model in models
    ]


def _protected(records: list[ModelVersion]) -> dict[tuple[str, int], str]:
    """(model, version) of each version no rule removes, with why."""
    protected: dict[tuple[str, int], str] = {}
    for model, state in serving_state(records).items():
        protected[model, state.stable.version] = "serves"
        if state.trial is not None:
            protected.setdefault((model, state.trial.version), f"on trial ({state.trial.kind})")
        history = [r for r in records if r.model == model and r.kind not in INFORMATIONAL_KINDS]
        before = version_before(history, state.stable.version)
        if before is not None:
            protected.setdefault((model, before), "a rollback goes back to it")
    for record in records:
        # Only operators and the guardrail sign a record with their name; trainers never do.
        if record.operator is not None and record.kind not in INFORMATIONAL_KINDS:
            protected.setdefault(
                (record.model, record.version), f"target of a {record.kind} record"
            )
    return protected


def _within(retention: Retention, rank: int, record: ModelVersion, now: datetime) -> str | None:
    """Why a retention rule keeps the version of ``rank`` (0: the newest), or None."""
    if retention.keep is not None and rank < retention.keep:
        return f"among the {retention.keep} newest"
    if retention.older_than is not None and now - _issued_at(record) < retention.older_than:
        return f"younger than {_age(retention.older_than)}"
    return None


def _age(age: timedelta) -> str:
    """``age`` as a duration is written (``90d``, ``36h``), in the largest unit that fits."""
    seconds = age.total_seconds()
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds:g}s"


def _issued_at(record: ModelVersion) -> datetime:
    issued = datetime.fromisoformat(record.created_at)
    return issued if issued.tzinfo is not None else issued.replace(tzinfo=UTC)


def _sharing(verdict: Verdict, staying: dict[str, Verdict]) -> Verdict:
    other = staying.get(verdict.artifact.key)
    if other is None:
        return verdict
    why = f"its artifact is {other.model} v{other.version}'s, which stays"
    return Verdict(verdict.model, verdict.version, verdict.artifact, verdict.created_at, why)


@dataclass(frozen=True)
class Removal:
    """A removed (or, in a dry run, removable) artifact, and whether Redis still held it."""

    verdict: Verdict
    present: bool


def prune(client: redis.Redis, verdicts: Iterable[Verdict], *, dry_run: bool) -> list[Removal]:
    """Delete the artifacts of the ``verdicts`` that remove theirs (with ``dry_run``, only look
    whether Redis holds them); returns what was (or would be) removed."""
    removals = []
    for verdict in verdicts:
        if not verdict.removed:
            continue
        key = verdict.artifact.key
        present = bool(client.exists(key) if dry_run else client.delete(key))
        removals.append(Removal(verdict, present))
    return removals


@dataclass(frozen=True)
class Pruning:
    """What a prune kept, with why, and what it removed (or, in a dry run, would)."""

    kept: list[Verdict]
    removed: list[Removal]
