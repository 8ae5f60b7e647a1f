"""Model versions and the registry topic, the audit log of every promotion.

Each record on ``driftline.models.registry`` (key: the model name; infinite retention) is one
:class:`ModelVersion`. Versions count 1, 2, 3, ... per model and are never reused; the artifact
they name is stored in Redis (see :mod:`streams.registry.artifacts`) before the record is published.

Only trainers issue version numbers (``kind`` ``"initial"`` or ``"challenger"``). An operator's
promote or rollback is a *manual record* (``kind`` ``"manual"`` or ``"rollback"``, see
:func:`manual_record`) that says "version V serves now": it repeats V's number, candidate,
artifact and lineage, names the version it replaces in ``previous_version`` and who did it in
``operator``. The version serving a model is the version of that model's LAST record in log
order (:func:`serving_records`), so a trainer's next promotion supersedes a manual one.
"""

from __future__ import annotations

import getpass
import logging
import os
import platform
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

MANUAL_PROMOTION = "manual"
ROLLBACK = "rollback"
MANUAL_KINDS = frozenset({MANUAL_PROMOTION, ROLLBACK})
"""Kinds of the records an operator publishes; they never issue a version number."""

OPERATOR_ENV = "DRIFTLINE_OPERATOR"

log = logging.getLogger("driftline.registry")


@dataclass(frozen=True)
class ArtifactRef:
    """Where a model's bytes live and how to check them."""

    key: str
    sha256: str
    size: int
    signature: str


@dataclass(frozen=True)
class ModelVersion:
    """One record of the registry topic."""

    model: str
    version: int
    kind: str
    candidate: dict[str, Any]
    previous_version: int | None
    reason: str
    evidence: dict[str, Any]
    lineage: dict[str, Any]
    artifact: ArtifactRef
    libraries: dict[str, str] = field(default_factory=lambda: library_versions())
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    operator: str | None = None

    @property
    def is_manual(self) -> bool:
        """Whether an operator published this record (a promote or a rollback)."""
        return self.kind in MANUAL_KINDS

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_json(cls, raw: bytes) -> ModelVersion:
        """Parse a record; fields a newer writer added are ignored, so old readers keep working.

        Raises ``orjson.JSONDecodeError`` (a ``ValueError``), ``AttributeError``, ``KeyError`` or
        ``TypeError`` for a malformed record.
        """
        data = orjson.loads(raw)
        known = {name: value for name, value in data.items() if name in _FIELD_NAMES}
        return cls(**{**known, "artifact": ArtifactRef(**data["artifact"])})


_FIELD_NAMES = frozenset(ModelVersion.__dataclass_fields__)


def default_operator(environ: Mapping[str, str] | None = None) -> str:
    """Who publishes a manual record: ``$DRIFTLINE_OPERATOR``, else the OS user."""
    env = os.environ if environ is None else environ
    if env.get(OPERATOR_ENV):
        return env[OPERATOR_ENV]
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (e.g. some containers)
        return "unknown"


def manual_record(
    target: ModelVersion,
    *,
    kind: str,
    previous_version: int | None,
    reason: str,
    operator: str,
) -> ModelVersion:
    """The record that makes ``target`` (a trainer's record) serve again, by an operator's hand.

    It repeats ``target``'s version, candidate, artifact, lineage and libraries: manual records
    never issue a version number, and the artifact stays the one the trainer signed.
    """
    if kind not in MANUAL_KINDS:
        raise ValueError(f"a manual record's kind is one of {sorted(MANUAL_KINDS)}, not {kind!r}")
    if not reason.strip():
        raise ValueError("a manual record needs a reason")
    return ModelVersion(
        model=target.model,
        version=target.version,
        kind=kind,
        candidate=target.candidate,
        previous_version=previous_version,
        reason=reason,
        evidence={},
        lineage=target.lineage,
        artifact=target.artifact,
        # What trained the artifact, not what publishes the record: it is the same artifact.
        libraries=target.libraries,
        operator=operator,
    )


def serving_records(records: Iterable[ModelVersion]) -> dict[str, ModelVersion]:
    """The record that says which version serves, per model: the last one in log order."""
    return {record.model: record for record in records}


def library_versions() -> dict[str, str]:
    """Versions of what trained and can load an artifact."""
    versions = {"python": platform.python_version()}
    for package in ("driftline", "river", "scikit-learn", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def read_registry(
    topic: str, kafka: Mapping[str, Any], *, timeout_ms: int = 10_000
) -> Iterator[ModelVersion]:
    """Every record of the registry topic from its beginning to its current end, in order.

    ``kafka`` holds kafka-python settings (see :func:`streams.config.kafka_settings`). A topic
    that does not exist yet holds no versions. A record that is not a model version is logged
    and skipped: one bad record must not stop every reader of the registry.
    """
    consumer = KafkaConsumer(enable_auto_commit=False, consumer_timeout_ms=timeout_ms, **kafka)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not assigned:
            return
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        remaining = {tp: end for tp, end in consumer.end_offsets(assigned).items() if end > 0}
        if not remaining:
            return
        for record in consumer:
            tp = TopicPartition(record.topic, record.partition)
            parsed = parse_record(
                record.value, where=f"{topic}[{record.partition}]@{record.offset}"
            )
            if parsed is not None:
                yield parsed
            if record.offset + 1 >= remaining.get(tp, 0):
                remaining.pop(tp, None)
            if not remaining:
                return
        if remaining:
            raise TimeoutError(f"the registry topic {topic} was not read to its end")
    finally:
        consumer.close()


def parse_record(raw: bytes | None, *, where: str) -> ModelVersion | None:
    """A registry record's value as a :class:`ModelVersion`, or None (logged) if it is not one."""
    try:
        return ModelVersion.from_json(raw or b"")
    except (AttributeError, KeyError, TypeError, ValueError) as error:  # JSONDecodeError too
        log.error("skipping malformed registry record %s: %s", where, error)
        return None
