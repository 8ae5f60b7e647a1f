"""Learn a model version again from its lineage, and check that it gives the same bytes.

:func:`replay` is what ``driftline registry verify MODEL VERSION`` and ``driftline registry
dataset MODEL VERSION -o FILE`` do. For the trainer's record of the version, it

1. reads the record's lineage (see :mod:`trainers.lineage`) and refuses, with a named
   :class:`VerifyError`, a record without one (:class:`LineageMissing`: published before
   driftline kept complete lineage), one its trainer declared not verifiable
   (:class:`Unverifiable`), or one learned from several sources;
2. builds a fresh :class:`~trainers.trainer.ModelTrainer` from the recorded configuration (or
   another one, to see where a change would diverge);
3. reads the recorded range of the labeled topic, refusing a range whose beginning was deleted
   (:class:`MissingRange`, naming the offsets), and keeps what the worker learned: the records
   keyed by the model whose events are the model's and decode, leaving out the positions the
   trainer noted as skipped (duplicate joins; a label that does not fit is refused by the
   replayed trainer itself);
4. feeds them to the trainer in log order, applying at the same number of events learned what
   the worker applied while it learned: the manual records it obeyed (with their artifacts from
   Redis, checked like any artifact) and the configurations it was restored under;
5. compares every version the replay issues up to the one verified with the trainer's record of
   it: the candidate, the kind, the events learned, the evidence and the artifact's SHA-256; when
   the version verified differs, the first difference on the way is reported (a
   :class:`Divergence`), since that is where the replay began to go elsewhere. An earlier version
   that differs while the one verified matches is no mismatch: a worker that crashed after
   publishing it may have learned on from an older checkpoint, and only the version's own
   lineage describes its state;
6. checks that it learned exactly the recorded events (their count and the digest of their
   positions): a replay that matches bytes from other events would prove nothing.

The data is never copied anywhere: the labeled topic is the dataset, which is why it keeps its
records forever by default (see :mod:`streams.admin`).

:func:`restore_artifacts` is ``driftline registry restore-artifacts [MODEL]``: the same replay
for each version whose artifact Redis lost, storing the rebuilt artifact again only when the
replay matches the record (the same SHA-256, so the same key and signature).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import redis
from kafka import KafkaConsumer, TopicPartition

from streams.contract import (
    InvalidEvent,
    LabeledEvent,
    decode_labeled_record,
    event_position,
    record_coordinate,
)
from streams.registry import artifacts
from streams.registry.client import RegistryError, UnknownModelError
from streams.registry.records import NEW_VERSION_KINDS, ModelVersion, read_registry
from trainers.errors import ArtifactIntegrityError, LabelError
from trainers.serialization import canonical_dumps, sha256_hex
from trainers.spec import ModelSpec
from trainers.trainer import ModelTrainer, Promotion

__all__ = [
    "Divergence",
    "LineageMissing",
    "MissingRange",
    "Replay",
    "Restoration",
    "Unverifiable",
    "VerifyError",
    "replay",
    "restore_artifacts",
]

# Seconds to wait for the next record of a range the log says exists.
_FETCH_TIMEOUT_MS = 30_000


class VerifyError(RegistryError):
    """A version that cannot be replayed; the message says why."""


class LineageMissing(VerifyError):
    """The record has no complete lineage: it was published before driftline kept one."""


class Unverifiable(VerifyError):
    """The trainer declared the version not verifiable (e.g. an unseeded random candidate)."""


class MissingRange(VerifyError):
    """Part of the range the version was learned from is no longer in the labeled topic."""


@dataclass(frozen=True)
class Divergence:
    """The first point where the replay differs from what the worker published.

    ``events`` is the number of events the replay had learned, ``version`` the version being
    compared, ``field`` what differs (``candidate``, ``kind``, ``evidence.…``, ``artifact``,
    ``events learned``), ``recorded`` and ``replayed`` the two values.
    """

    events: int
    version: int
    field: str
    recorded: Any
    replayed: Any

    def __str__(self) -> str:
        return (
            f"diverges at v{self.version}, after {self.events} events learned: {self.field} "
            f"is {self.recorded!r} in the registry, {self.replayed!r} in the replay"
        )


@dataclass(frozen=True)
class Replay:
    """What replaying a version gave: the recorded and replayed artifact digests, the events
    learned, the versions compared, the first divergence (None when everything matched), and
    the replayed estimator (None when the replay did not issue the version)."""

    model: str
    version: int
    recorded_sha256: str
    replayed_sha256: str | None
    events: int
    compared: tuple[int, ...]
    divergence: Divergence | None
    estimator: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def matches(self) -> bool:
        return self.divergence is None and self.recorded_sha256 == self.replayed_sha256


def replay(
    model: str,
    version: int,
    *,
    kafka: Mapping[str, Any],
    registry_topic: str,
    signing_key: bytes,
    redis_client: redis.Redis | None,
    spec: ModelSpec | None = None,
    max_event_bytes: int,
    on_learned: Callable[[LabeledEvent], None] | None = None,
) -> Replay:
    """Learn `version` of `model` again from its lineage (see the module docstring).

    Parameters
    ----------
    kafka
        kafka-python settings of the cluster.
    registry_topic
        The registry topic.
    signing_key
        The deployment's key: only records it signed are read, artifacts are checked with it.
    redis_client
        Where the artifacts of obeyed records are; None for a version that obeyed none.
    spec
        The configuration to replay with instead of the recorded one.
    max_event_bytes
        The worker's limit on an event's size: a bigger one was dead-lettered, not learned.
    on_learned
        Called with every event the replayed trainer learned, in order.

    """
    records = list(read_registry(registry_topic, kafka, key=signing_key))
    issued = _issued(records, model)
    if version not in issued:
        raise VerifyError(f"the registry has no trainer's record of {model} v{version}")
    target = issued[version]
    lineage = target.lineage
    if "format" not in lineage:
        raise LineageMissing(
            f"{model} v{version} was published before driftline recorded complete lineage "
            "(its record names only the first and last offsets): it cannot be verified"
        )
    if not lineage["verifiable"]:
        raise Unverifiable(
            f"{model} v{version} is not verifiable: {'; '.join(lineage['unverifiable'])}"
        )
    if len(lineage["ranges"]) != 1:
        raise Unverifiable(
            f"{model} v{version} was learned from {len(lineage['ranges'])} sources, whose "
            "interleaving is not recorded: it cannot be verified"
        )
    (learned,) = lineage["ranges"]
    configurations = lineage["configurations"]
    trainer = ModelTrainer(spec or ModelSpec.from_dict(model, configurations[0]["table"]))
    timeline = _Timeline(
        model, lineage, records, trainer, redis_client, signing_key, override=spec is not None
    )
    compared: list[int] = []
    # A crash can fork the worker's timeline (a version published, then learned again
    # differently from an older checkpoint): a version's own lineage is what must match, and an
    # earlier difference only says where a mismatch of its own began.
    first_divergence: Divergence | None = None
    source = learned["source"]
    skipped = set(learned["skipped"].get("offsets", ()))
    dedupe = "offsets" not in learned["skipped"]
    for position, event in _events(
        kafka, model, learned, max_event_bytes=max_event_bytes, dedupe=dedupe
    ):
        timeline.apply()
        if position in skipped:
            timeline.trainer.skip(source, position)
            continue
        try:
            promotion = timeline.trainer.learn(
                event.features, event.label, source=source, position=position
            )
        except LabelError:
            continue
        if on_learned is not None:
            on_learned(event)
        if promotion is None:
            continue
        compared.append(promotion.version)
        divergence = _compare(promotion, issued.get(promotion.version), timeline.trainer.events)
        first_divergence = first_divergence or divergence
        if promotion.version == version:
            found = first_divergence if divergence is not None else None
            return _result(target, promotion, timeline.trainer, tuple(compared), found)
    events = timeline.trainer.events
    divergence = Divergence(events, version, "events learned", lineage["events"], events)
    return _result(target, None, timeline.trainer, tuple(compared), first_divergence or divergence)


@dataclass(frozen=True)
class Restoration:
    """What :func:`restore_artifacts` found or did for one version's artifact.

    ``status`` is ``present`` (Redis holds it), ``restored`` (rebuilt and stored again),
    ``diverged`` (the replay gave other bytes: nothing stored) or ``cannot`` (the version cannot
    be replayed); ``detail`` says with which digest, or why.

    >>> str(Restoration("sea", 2, "present", "sha256 ab12"))
    'sea v2: present, sha256 ab12'
    """

    model: str
    version: int
    status: Literal["present", "restored", "diverged", "cannot"]
    detail: str

    @property
    def stored(self) -> bool:
        """Whether Redis holds the artifact now."""
        return self.status in ("present", "restored")

    def __str__(self) -> str:
        return f"{self.model} v{self.version}: {self.status}, {self.detail}"


def restore_artifacts(
    model: str | None,
    *,
    kafka: Mapping[str, Any],
    registry_topic: str,
    signing_key: bytes,
    redis_client: redis.Redis,
    redis_prefix: str,
    max_event_bytes: int,
) -> Iterator[Restoration]:
    """Rebuild and store again the artifact of every version of `model` (of every model when
    None) that Redis no longer holds, as :func:`replay` learns it; one :class:`Restoration` per
    version, in version order.

    Versions go oldest first, so that an artifact a later version's replay needs (one its
    trainer adopted) is back before that replay. A rebuilt artifact is stored only when the
    replay matches the record: then its digest, key and signature are the record's.

    Parameters
    ----------
    kafka, registry_topic, signing_key, max_event_bytes
        As for :func:`replay`.
    redis_client
        Where artifacts are stored.
    redis_prefix
        Namespace of the deployment's Redis keys: a rebuilt artifact's key is in it.

    """
    records = list(read_registry(registry_topic, kafka, key=signing_key))
    models = sorted({record.model for record in records}) if model is None else [model]
    for name in models:
        issued = _issued(records, name)
        if not issued and model is not None:
            raise UnknownModelError(name)
        for version in sorted(issued):
            record = issued[version]
            if redis_client.exists(record.artifact.key):
                yield Restoration(name, version, "present", f"sha256 {record.artifact.sha256}")
                continue
            try:
                result = replay(
                    name,
                    version,
                    kafka=kafka,
                    registry_topic=registry_topic,
                    signing_key=signing_key,
                    redis_client=redis_client,
                    max_event_bytes=max_event_bytes,
                )
            except VerifyError as error:
                yield Restoration(name, version, "cannot", str(error))
                continue
            yield _store_replayed(record, result, redis_client, redis_prefix, signing_key)


def _store_replayed(
    record: ModelVersion,
    result: Replay,
    redis_client: redis.Redis,
    redis_prefix: str,
    signing_key: bytes,
) -> Restoration:
    """Store the artifact `result` rebuilt for `record`, if it is the one the record names."""
    model, version = record.model, record.version
    if not result.matches or result.estimator is None:
        why = result.divergence or (
            f"the replay gives sha256 {result.replayed_sha256}, the record names "
            f"{result.recorded_sha256}"
        )
        return Restoration(model, version, "diverged", f"not stored: {why}")
    artifact = artifacts.Artifact.pack(
        result.estimator, model=model, version=version, prefix=redis_prefix, key=signing_key
    )
    if artifact.ref != record.artifact:
        # The digest matched, and signatures are deterministic: only the namespace can differ.
        return Restoration(
            model,
            version,
            "cannot",
            f"rebuilt under {artifact.ref.key}, not the record's {record.artifact.key} (is "
            "DRIFTLINE_REDIS_PREFIX that of this deployment?)",
        )
    artifacts.store_again(redis_client, artifact)
    return Restoration(
        model,
        version,
        "restored",
        f"sha256 {record.artifact.sha256} rebuilt from {result.events} events",
    )


def _issued(records: list[ModelVersion], model: str) -> dict[int, ModelVersion]:
    """The trainer's record of each version of `model` (an operator's trial repeats one)."""
    issued: dict[int, ModelVersion] = {}
    for record in records:
        if record.model == model and record.kind in NEW_VERSION_KINDS and record.operator is None:
            issued.setdefault(record.version, record)
    return issued


def _result(
    target: ModelVersion,
    promotion: Promotion | None,
    trainer: ModelTrainer,
    compared: tuple[int, ...],
    divergence: Divergence | None,
) -> Replay:
    issued = promotion if promotion is not None and promotion.version == target.version else None
    replayed = None if issued is None else _artifact_sha256(issued)
    if divergence is None:
        divergence = _selection_divergence(target, trainer)
    return Replay(
        model=target.model,
        version=target.version,
        recorded_sha256=target.artifact.sha256,
        replayed_sha256=replayed,
        events=trainer.events,
        compared=compared,
        divergence=divergence,
        estimator=None if issued is None else issued.estimator,
    )


def _selection_divergence(target: ModelVersion, trainer: ModelTrainer) -> Divergence | None:
    """Whether the replay learned other events than the worker did, though the bytes match."""
    (recorded,) = target.lineage["ranges"]
    (replayed,) = trainer.lineage["ranges"]
    for field in ("events", "learned_sha256", "skipped"):
        if recorded[field] != replayed[field]:
            return Divergence(
                trainer.events, target.version, f"lineage {field}", recorded[field], replayed[field]
            )
    return None


def _compare(promotion: Promotion, record: ModelVersion | None, events: int) -> Divergence | None:
    """The first difference between a version the replay issued and the worker's record."""
    version = promotion.version
    if record is None:
        return Divergence(events, version, "version", None, version)
    checks = [
        ("candidate", record.candidate["name"], promotion.candidate),
        ("kind", record.kind.value, promotion.kind),
        ("events learned", record.lineage.get("events"), promotion.lineage["events"]),
        *(
            (f"evidence.{path}", recorded, replayed)
            for path, recorded, replayed in _leaf_differences(
                record.evidence, _as_published(promotion.evidence)
            )
        ),
        ("artifact sha256", record.artifact.sha256, _artifact_sha256(promotion)),
    ]
    for field, recorded, replayed in checks:
        if recorded != replayed:
            return Divergence(events, version, field, recorded, replayed)
    return None


def _artifact_sha256(promotion: Promotion) -> str:
    """The digest of the artifact a worker stores for `promotion`."""
    return sha256_hex(canonical_dumps(promotion.estimator))


def _as_published(value: Any) -> Any:
    """`value` as a reader of the registry sees it: through JSON."""
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


def _leaf_differences(left: Any, right: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(left.keys() | right.keys()):
            yield from _leaf_differences(
                left.get(key), right.get(key), f"{path}.{key}" if path else key
            )
    elif left != right:
        yield path, left, right


class _Timeline:
    """What the worker applied between events: obeyed records and configuration changes."""

    def __init__(
        self,
        model: str,
        lineage: Mapping[str, Any],
        records: list[ModelVersion],
        trainer: ModelTrainer,
        redis_client: redis.Redis | None,
        signing_key: bytes,
        *,
        override: bool,
    ) -> None:
        self.model = model
        self.trainer = trainer
        # With another configuration, the recorded changes of configuration do not apply.
        configurations = [] if override else lineage["configurations"][1:]
        self._changes = sorted(
            [*lineage["adoptions"], *configurations], key=lambda change: change["step"]
        )
        self._by_offset = {record.offset: record for record in records}
        self._redis = redis_client
        self._key = signing_key

    def apply(self) -> None:
        """Apply what the worker applied after as many events as the trainer has learned."""
        while self._changes and self._changes[0]["events"] <= self.trainer.events:
            change = self._changes.pop(0)
            if "table" in change:
                spec = ModelSpec.from_dict(self.model, change["table"])
                self.trainer, _ = ModelTrainer.restore(
                    self.trainer.snapshot(), spec, reset=change["reset"]
                )
            else:
                self._adopt(change)

    def _adopt(self, adoption: Mapping[str, Any]) -> None:
        origin = {key: adoption[key] for key in adoption if key not in _ADOPTION_FIELDS}
        estimator = None
        if adoption["artifact"]:
            record = self._by_offset.get(adoption.get("registry_offset"))
            if record is None or record.signature != adoption.get("record_signature"):
                raise VerifyError(
                    f"{self.model}: the record the trainer obeyed after {adoption['events']} "
                    f"events (registry offset {adoption.get('registry_offset')}) is not in the "
                    "registry as it was"
                )
            if self._redis is None:
                raise VerifyError(f"{self.model}: replaying an obeyed record needs Redis")
            try:
                estimator = artifacts.load(self._redis, record, key=self._key)
            except (ArtifactIntegrityError, redis.RedisError) as error:
                raise VerifyError(
                    f"{self.model}: the artifact of v{record.version}, which the trainer adopted "
                    f"after {adoption['events']} events, cannot be loaded: {error}"
                ) from error
        self.trainer.adopt(
            adoption["version"],
            adoption["candidate"],
            adoption["reason"],
            estimator=estimator,
            origin=origin,
        )


_ADOPTION_FIELDS = frozenset({"events", "step", "version", "candidate", "reason", "artifact"})


def _events(
    kafka: Mapping[str, Any],
    model: str,
    learned: Mapping[str, Any],
    *,
    max_event_bytes: int,
    dedupe: bool,
) -> Iterator[tuple[int, LabeledEvent]]:
    """The model's events in the recorded range, with their positions, as the worker saw them."""
    topic, partition = _topic_partition(learned["source"])
    first, last = learned["first_offset"], learned["last_offset"]
    first_record, last_record = record_coordinate(first)[0], record_coordinate(last)[0]
    key = model.encode()
    joined: dict[str, int] = {}
    for message in _read_range(kafka, topic, partition, first_record, last_record):
        if message.key != key:
            continue
        try:
            entries = decode_labeled_record(message.value, max_bytes=max_event_bytes)
        except InvalidEvent:
            continue
        for entry in entries:
            event, position = entry.decoded, event_position(message.offset, entry.index)
            if isinstance(event, InvalidEvent) or event.model != model:
                continue
            if not first <= position <= last:
                continue
            if dedupe and event.join is not None:
                scorer, seq = event.join
                if seq <= joined.get(scorer, 0):
                    continue
                joined[scorer] = seq
            yield position, event


def _topic_partition(source: str) -> tuple[str, int]:
    topic, _, rest = source.rpartition("[")
    if not topic or not rest.endswith("]") or not rest[:-1].isdigit():
        raise VerifyError(f"lineage source {source!r} is not a Kafka partition (topic[partition])")
    return topic, int(rest[:-1])


def _read_range(
    kafka: Mapping[str, Any], topic: str, partition: int, first: int, last: int
) -> Iterator[Any]:
    """The records at offsets `first` to `last` of one partition; :class:`MissingRange` when
    retention (or a deletion) removed the beginning of the range."""
    consumer = KafkaConsumer(
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        consumer_timeout_ms=_FETCH_TIMEOUT_MS,
        **kafka,
    )
    try:
        tp = TopicPartition(topic, partition)
        if partition not in (consumer.partitions_for_topic(topic) or set()):
            raise MissingRange(f"{topic}[{partition}] does not exist: offsets {first}..{last}")
        start = consumer.beginning_offsets([tp])[tp]
        end = consumer.end_offsets([tp])[tp]
        if start > first:
            gone = f"{first}..{min(start, last + 1) - 1}"
            raise MissingRange(
                f"{topic}[{partition}] offsets {gone} are deleted (the log starts at {start}, "
                "by retention or a deletion): the version cannot be learned again"
            )
        if end <= last:
            raise MissingRange(
                f"{topic}[{partition}] offsets {max(end, first)}..{last} are not in the log "
                f"(it ends at {end})"
            )
        consumer.assign([tp])
        consumer.seek(tp, first)
        for message in consumer:
            if message.offset > last:
                return
            yield message
            if message.offset == last:
                return
        raise MissingRange(f"{topic}[{partition}]: no record after offset {first}..{last} came")
    finally:
        consumer.close()
