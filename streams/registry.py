"""Model versions and the registry topic, the audit log of every promotion.

Each record on ``driftline.models.registry`` (key: the model name; infinite retention) is one
:class:`ModelVersion`. Versions count 1, 2, 3, ... per model and are never reused; the artifact
they name is stored in Redis (see :mod:`streams.artifacts`) before the record is published.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition


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

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_json(cls, raw: bytes) -> ModelVersion:
        data = orjson.loads(raw)
        return cls(**{**data, "artifact": ArtifactRef(**data["artifact"])})


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
    that does not exist yet holds no versions.
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
            yield ModelVersion.from_json(record.value)
            if record.offset + 1 >= remaining.get(tp, 0):
                remaining.pop(tp, None)
            if not remaining:
                return
        if remaining:
            raise TimeoutError(f"the registry topic {topic} was not read to its end")
    finally:
        consumer.close()


def latest_versions(topic: str, kafka: Mapping[str, Any]) -> dict[str, int]:
    """The highest version published so far, per model."""
    latest: dict[str, int] = {}
    for record in read_registry(topic, kafka):
        latest[record.model] = max(latest.get(record.model, 0), record.version)
    return latest
