"""Hand-made canaries: a version trained outside the trainer, put on trial as an operator would.

The guardrail is only worth showing (and testing) against versions whose quality is known in
advance: a *bad* one (trained on flipped labels, so it is wrong about as often as the stable
version is right) must be rolled back, a *good* one (trained on the same events, labels as they
are, or the stable version's artifact that learned them) rolled out. Neither comes from the
trainer, whose promotions depend on the stream, so they
are built here: :func:`train_candidate` fits a candidate of the configuration on given examples,
and :func:`publish_canary` stores its signed artifact in Redis and publishes a signed ``canary``
record for it, beside the stable version, as ``driftline registry promote --canary`` does for a
version the trainer made. ``driftline demo --delayed-labels`` and the rollout tests share them.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from streams.registry.artifacts import Artifact
from streams.registry.records import ModelVersion, RecordKind
from trainers.candidates import Candidate, build_candidate

__all__ = ["ArtifactStore", "publish_canary", "registry_publisher", "train_candidate"]


class ArtifactStore(Protocol):
    """Where artifacts go: a ``redis.Redis`` client (only ``set`` is used)."""

    def set(self, name: str, value: bytes) -> Any: ...


def train_candidate(
    spec: Mapping[str, Any],
    task: str,
    examples: Iterable[tuple[Mapping[str, Any], Any]],
    *,
    flip: bool = False,
    start: Candidate | None = None,
) -> Candidate:
    """A candidate of ``spec`` that learned ``examples`` (features, label), in order: a fresh
    one, or a copy of ``start`` (a version's artifact) that goes on learning.

    ``flip`` inverts every (boolean) label: a deliberately bad model, which the guardrail must
    stop however good the stable version is.
    """
    candidate = build_candidate(spec, task) if start is None else copy.deepcopy(start)
    for features, label in examples:
        candidate.learn_one(dict(features), (not label) if flip else label)
    return candidate


def publish_canary(
    candidate: Candidate,
    *,
    name: str,
    stable: ModelVersion,
    version: int,
    fraction: float,
    reason: str,
    operator: str,
    key: bytes,
    redis_prefix: str,
    store: ArtifactStore,
    publish: Callable[[ModelVersion], object],
    lineage: Mapping[str, Any] | None = None,
) -> ModelVersion:
    """Put ``candidate`` on trial as ``version`` of ``stable``'s model, serving ``fraction``.

    The artifact is packed and signed with ``key`` under ``redis_prefix`` and stored first, so
    that a scorer that reads the record finds it. The record is ``stable``'s, changed where a
    canary differs (kind, version, candidate ``name``, artifact, rollout, reason, operator) and
    signed; ``lineage`` (default: ``stable``'s) says which events the candidate saw. ``publish``
    sends it to the registry topic. Returns the published record.
    """
    artifact = Artifact.pack(
        candidate, model=stable.model, version=version, prefix=redis_prefix, key=key
    )
    store.set(artifact.ref.key, artifact.blob)
    record = dataclasses.replace(
        stable,
        version=version,
        kind=RecordKind.CANARY,
        candidate={"name": name, "params": candidate.params},
        previous_version=stable.version,
        reason=reason,
        evidence={},
        lineage=dict(stable.lineage if lineage is None else lineage),
        artifact=artifact.ref,
        rollout={"fraction": fraction},
        operator=operator,
        created_at=datetime.now(UTC).isoformat(),
        signature=None,
    ).signed(key)
    publish(record)
    return record


def registry_publisher(
    kafka_config: Mapping[str, Any], topic: str, *, timeout: float = 30.0
) -> Callable[[ModelVersion], None]:
    """A ``publish`` for :func:`publish_canary`: one record to ``topic``, acknowledged by the
    broker (``acks=all``) before it returns. ``kafka_config`` holds ``bootstrap_servers`` and
    the cluster's security settings."""

    def publish(record: ModelVersion) -> None:
        from streams.registry.client import publish_record  # Kafka clients: only when publishing

        publish_record(kafka_config, topic, record, timeout=timeout)

    return publish
