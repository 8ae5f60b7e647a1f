"""A client of the model registry for any Python service: read, follow, load, promote, roll back.

:class:`RegistryClient` uses kafka-python (no event loop needed) and, to load models, Redis:

- ``latest(model)``: the record saying which version serves now (the model's last record);
- ``get(model, version)``: the trainer's original record of a version;
- ``history(model)``, ``models()``: the audit log, read from the registry topic's beginning;
- ``subscribe()``: each new record as it is published (from now, or from the beginning);
- ``load(record)``: the model itself, unpickled only after the record's signature and the
  artifact's digest and signature check out;
- ``promote(model, version, reason=...)``, ``rollback(model, to=..., reason=...)``: publish a
  signed manual record (see :func:`streams.registry.records.manual_record`); they never issue
  version numbers.

Only records signed with the deployment's key exist for the client (see
:mod:`streams.registry.records`): reading (``history``, ``latest``, ``get``, ``serving``,
``models``, ``subscribe``) skips every other record with a logged error, so a forged record can
neither make a version serve nor stand in for a trainer's version; ``load`` of such a record
raises :class:`~streams.registry.records.RecordSignatureError`. Reading therefore needs the
signing key too.

Every default comes from the environment, like the workers' (:class:`streams.settings.Settings`):
``KAFKA_BOOTSTRAP_SERVERS`` (plus ``KAFKA_SECURITY_*``/``KAFKA_SASL_*``/``KAFKA_SSL_*``),
``DRIFTLINE_TOPIC_PREFIX``, ``REDIS_URL``, ``DRIFTLINE_REDIS_PREFIX``, ``DRIFTLINE_SIGNING_KEY``
(or ``..._FILE``) and, for manual records, ``DRIFTLINE_OPERATOR``. Redis is only needed by
``load``.

Reading the history scans the registry topic from its beginning on every call: the registry
holds one small record per promotion, and a fresh scan is never stale.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.closing import ClosedOnExit
from streams.registry import artifacts
from streams.registry.records import (
    ModelVersion,
    RecordKind,
    default_operator,
    manual_record,
    parse_record,
    read_registry,
    serving_records,
)
from streams.settings import Settings
from trainers.candidates import Candidate
from trainers.errors import ArtifactIntegrityError

__all__ = [
    "ManualRecordRefused",
    "RegistryClient",
    "RegistryError",
    "RegistrySubscription",
    "UnknownModelError",
    "UnknownVersionError",
]

log = logging.getLogger("driftline.registry")

# Seconds to wait for the broker to acknowledge a manual record.
_PUBLISH_TIMEOUT = 30.0


class RegistryError(Exception):
    """Base class of the registry client's errors."""


class _RegistryLookupError(RegistryError, KeyError):
    def __str__(self) -> str:
        # KeyError would print the repr of its argument, quotes included.
        return str(self.args[0])


class UnknownModelError(_RegistryLookupError):
    """The registry holds no record of this model."""

    def __init__(self, model: str) -> None:
        super().__init__(f"the registry has no model {model!r}")
        self.model = model


class UnknownVersionError(_RegistryLookupError):
    """The model exists, but no trainer published this version of it."""

    def __init__(self, model: str, version: int, known: list[int]) -> None:
        super().__init__(f"{model!r} has no version {version}; its versions are {known or 'none'}")
        self.model = model
        self.version = version


class ManualRecordRefused(RegistryError, ValueError):
    """A promote or rollback that would not change anything, or goes the wrong way."""


class RegistrySubscription(ClosedOnExit):
    """Registry records as they are published: iterate (blocks), or :meth:`poll` with a timeout.

    The starting point is fixed when the subscription is created, not on the first read: with
    ``from_beginning=False`` every record published after creation is seen. A registry topic
    that does not exist yet is waited for, and then read from its beginning. Malformed records,
    and records nobody with ``key`` signed, are logged and skipped. Not thread-safe: use it from
    one thread.
    """

    def __init__(
        self,
        topic: str,
        kafka: Mapping[str, Any],
        *,
        key: bytes,
        from_beginning: bool = False,
    ) -> None:
        self.topic = topic
        self._key = key
        self.refused: dict[str, str] = {}
        """Per model, why its last record that did not verify was refused (logged once)."""
        # A reader must not create the registry topic: it would get the broker's default
        # retention instead of the infinite one streams.admin.ensure_topics gives it.
        self._consumer = KafkaConsumer(
            enable_auto_commit=False, allow_auto_create_topics=False, **kafka
        )
        self._from_beginning = from_beginning
        self._backlog_ends: dict[TopicPartition, int] = {}
        self._buffer: collections.deque[ModelVersion] = collections.deque()
        self._assigned = self._assign(existed_before=True)

    def _assign(self, *, existed_before: bool) -> bool:
        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            return False
        assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        ends = self._consumer.end_offsets(assigned)
        if self._from_beginning or not existed_before:
            self._consumer.seek_to_beginning(*assigned)
            self._backlog_ends = {tp: end for tp, end in ends.items() if end > 0}
        else:
            for tp in assigned:
                self._consumer.seek(tp, ends[tp])
        return True

    @property
    def caught_up(self) -> bool:
        """Whether every record that existed when reading started has been returned."""
        if not self._assigned:
            return True  # no topic yet, so nothing to catch up with
        if self._buffer:
            return False
        self._backlog_ends = {
            tp: end for tp, end in self._backlog_ends.items() if self._consumer.position(tp) < end
        }
        return not self._backlog_ends

    def poll(self, timeout: float = 1.0) -> list[ModelVersion]:
        """The records published since the last call, waiting up to ``timeout`` seconds for one."""
        if self._buffer:
            records, self._buffer = list(self._buffer), collections.deque()
            return records
        if not self._assigned:
            self._assigned = self._assign(existed_before=False)
            if not self._assigned:
                time.sleep(min(timeout, 0.5))
                return []
        batches = self._consumer.poll(timeout_ms=int(timeout * 1000))
        records = []
        for tp in sorted(batches, key=lambda tp: tp.partition):
            for message in batches[tp]:
                where = f"{tp.topic}[{tp.partition}]@{message.offset}"
                record = parse_record(
                    message.value, where=where, key=self._key, on_refused=self._refuse
                )
                if record is not None:
                    records.append(record)
        return records

    def _refuse(self, record: ModelVersion, error: Exception) -> None:
        if record.model not in self.refused:
            log.error(
                "cannot verify %s v%d: not signed with this reader's key; check "
                "DRIFTLINE_SIGNING_KEY (%s)",
                record.model,
                record.version,
                error,
            )
        self.refused[record.model] = (
            f"cannot verify {record.model} v{record.version}: not signed with this key; "
            "check DRIFTLINE_SIGNING_KEY"
        )

    def __iter__(self) -> Iterator[ModelVersion]:
        return self

    def __next__(self) -> ModelVersion:
        while not self._buffer:
            self._buffer.extend(self.poll(1.0))
        return self._buffer.popleft()

    def close(self) -> None:
        """Leave the topic and close the connection."""
        self._consumer.close()


class RegistryClient(ClosedOnExit):
    """Read, follow and act on the model registry (see the module docstring).

    Every parameter left out comes from ``settings`` (default: :meth:`Settings.from_env`).

    Parameters
    ----------
    bootstrap_servers
        Kafka's ``host:port`` list; given, it replaces the settings' Kafka connection, security
        included (pass that in ``kafka_config``).
    topic
        The registry topic.
    redis_url
        Where artifacts are stored; needed by :meth:`load` only.
    signing_key
        The deployment's key: it verifies every record read and signs the manual ones.
    redis_prefix
        Namespace of the deployment's Redis keys. Artifacts are looked up under it only.
    settings
        The settings of the deployment.
    **kafka_config
        kafka-python settings shared by its consumer and producer (``security_protocol``,
        ``sasl_*``, ``ssl_*``, ...); they override the settings'.
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        topic: str | None = None,
        redis_url: str | None = None,
        signing_key: bytes | str | None = None,
        redis_prefix: str | None = None,
        settings: Settings | None = None,
        **kafka_config: Any,
    ) -> None:
        settings = Settings.from_env() if settings is None else settings
        if bootstrap_servers is None:
            self.kafka: dict[str, Any] = {**settings.kafka, **kafka_config}
        else:
            self.kafka = {**kafka_config, "bootstrap_servers": bootstrap_servers}
        self.topic = topic or settings.topics.registry
        self.redis_prefix = settings.redis_prefix if redis_prefix is None else redis_prefix
        self._settings = settings
        self._redis_url = redis_url
        self._signing_key = signing_key.encode() if isinstance(signing_key, str) else signing_key
        self._redis: redis.Redis | None = None

    def history(self, model: str) -> list[ModelVersion]:
        """Every record of ``model``, in log order (empty for an unknown model)."""
        return [record for record in self._records() if record.model == model]

    def latest(self, model: str) -> ModelVersion | None:
        """The record of the version serving ``model`` now (its last record), or None."""
        history = self.history(model)
        return history[-1] if history else None

    def serving(self) -> dict[str, ModelVersion]:
        """The serving record of every model."""
        return serving_records(self._records())

    def get(self, model: str, version: int) -> ModelVersion:
        """The trainer's record of ``version``; raises :class:`UnknownModelError` or
        :class:`UnknownVersionError`."""
        return _original(self.history(model), model, version)

    def models(self) -> list[str]:
        """The names of every model in the registry, sorted."""
        return sorted({record.model for record in self._records()})

    def subscribe(self, *, from_beginning: bool = False) -> RegistrySubscription:
        """Follow the registry: records published from now on, or all of them first."""
        return RegistrySubscription(
            self.topic, self.kafka, key=self._key(), from_beginning=from_beginning
        )

    def load(self, version: ModelVersion) -> Candidate:
        """Fetch, verify and unpickle the model ``version`` names.

        Raises :class:`~trainers.errors.ArtifactIntegrityError`, without unpickling anything,
        for a record nobody with the key signed (its subclass
        :class:`~streams.registry.records.RecordSignatureError`), or an artifact that is
        missing, altered, unsigned, signed with another key, signed as another model or version,
        or named outside this deployment's Redis namespace.
        """
        ref = version.artifact
        expected_key = artifacts.artifact_key(self.redis_prefix, ref.sha256)
        if ref.key != expected_key:
            raise ArtifactIntegrityError(
                f"{version.model} v{version.version} names the artifact key {ref.key!r}, not "
                f"{expected_key!r} (is DRIFTLINE_REDIS_PREFIX that of this deployment?)"
            )
        return artifacts.load(self._redis_client(), version, key=self._key())

    def promote(self, model: str, version: int, *, reason: str) -> ModelVersion:
        """Make ``version`` serve ``model`` now; returns the published manual record."""
        return self._publish_manual(model, version, kind=RecordKind.MANUAL, reason=reason)

    def rollback(self, model: str, *, to: int, reason: str) -> ModelVersion:
        """Make an earlier version serve ``model`` again; returns the published record."""
        return self._publish_manual(model, to, kind=RecordKind.ROLLBACK, reason=reason)

    def close(self) -> None:
        """Release the Redis connection (Kafka connections last one call each)."""
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    def _records(self) -> list[ModelVersion]:
        return list(read_registry(self.topic, self.kafka, key=self._key()))

    def _key(self) -> bytes:
        if self._signing_key is None:
            self._signing_key = self._settings.signing_key()
        return self._signing_key

    def _redis_client(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self._redis_url or self._settings.redis_url)
        return self._redis

    def _publish_manual(
        self, model: str, version: int, *, kind: RecordKind, reason: str
    ) -> ModelVersion:
        history = self.history(model)
        target = _original(history, model, version)
        serving = history[-1]
        if serving.version == version:
            raise ManualRecordRefused(f"{model} v{version} is already serving")
        if kind == RecordKind.ROLLBACK and version > serving.version:
            raise ManualRecordRefused(
                f"a rollback goes back to an earlier version, and v{version} is newer than the "
                f"serving v{serving.version}: promote it instead"
            )
        record = manual_record(
            target,
            kind=kind,
            previous_version=serving.version,
            reason=reason,
            operator=default_operator(),
        ).signed(self._key())
        producer = KafkaProducer(acks="all", **self.kafka)
        try:
            delivery = producer.send(self.topic, key=model.encode(), value=record.to_json())
            delivery.get(timeout=_PUBLISH_TIMEOUT)
            producer.flush()
        finally:
            producer.close()
        log.info("published %s of %s v%d: %s", kind, model, version, reason)
        return record


def _original(history: list[ModelVersion], model: str, version: int) -> ModelVersion:
    """The trainer's record of ``version`` in ``model``'s history (manual records repeat it)."""
    if not history:
        raise UnknownModelError(model)
    for record in history:
        if record.version == version and not record.is_manual:
            return record
    known = sorted({record.version for record in history if not record.is_manual})
    raise UnknownVersionError(model, version, known)
