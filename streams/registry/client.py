"""A client of the model registry for any Python service: read, follow, load, promote, roll back.

:class:`RegistryClient` uses kafka-python (no event loop needed) and, to load models, Redis:

- ``latest(model)``: the record saying which version serves now (the model's last record);
- ``get(model, version)``: the trainer's original record of a version;
- ``history(model)``, ``models()``: the audit log, read from the registry topic's beginning;
- ``subscribe()``: each new record as it is published (from now, or from the beginning);
- ``load(record)``: the model itself, unpickled only after the record's signature and the
  artifact's digest and signature check out;
- ``replay(model, version)``: learn a version again from its lineage (``registry verify``), and
  ``restore_artifacts(model)``: store again, so rebuilt, the artifacts Redis lost;
- ``promote(model, version, reason=...)``, ``rollback(model, to=..., reason=...)``: publish a
  signed manual record (see :func:`streams.registry.records.manual_record`); they never issue
  version numbers;
- ``canary(model, version, fraction=..., reason=...)``, ``shadow(model, version, reason=...)``:
  put a version on trial beside the stable one; ``rollout(model, reason=...)`` makes the trial
  stable, ``stop_trial(model, reason=...)`` ends it (a ``rollback`` to the stable version);
  ``state(model)`` says what serves (:class:`~streams.registry.records.ServingState`);
- ``live(model)``: the scoring workers' latest live report per (version, arm), read from the
  metrics topic (:class:`LiveReport`);
- ``prune_artifacts(retention, model=...)``: remove from Redis the artifacts of versions beyond
  a retention, never one that serves, is on trial or can be rolled back to
  (:mod:`streams.registry.retention`).

Only records signed with the deployment's key exist for the client (see
:mod:`streams.registry.records`): reading (``history``, ``latest``, ``get``, ``serving``,
``models``, ``subscribe``) skips every other record with a logged error, so a forged record can
neither make a version serve nor stand in for a trainer's version; ``load`` of such a record
raises :class:`~streams.registry.records.RecordSignatureError`. Reading therefore needs the
signing key too.

Every default comes from the environment, like the workers' (:class:`streams.settings.Settings`):
``KAFKA_BOOTSTRAP_SERVERS`` (plus ``KAFKA_SECURITY_*``/``KAFKA_SASL_*``/``KAFKA_SSL_*``),
``DRIFTLINE_TOPIC_PREFIX``, ``REDIS_URL``, ``DRIFTLINE_REDIS_PREFIX``, ``DRIFTLINE_SIGNING_KEY``
(or ``..._FILE``) and, for manual records on a plaintext cluster, ``DRIFTLINE_OPERATOR``: on an
authenticated connection a manual record's ``operator`` is the principal the broker knows the
client as (:func:`streams.settings.authenticated_principal`), with ``operator_verified: true``.
Redis is only needed by ``load``, ``replay``, ``prune_artifacts`` and ``restore_artifacts``.

Reading the history scans the registry topic from its beginning on every call: the registry
holds one small record per promotion, and a fresh scan is never stale. ``live`` scans the metrics
topic the same way, keeping only the newest report of each (version, arm): the reports are
cumulative, so the newest says everything.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.closing import ClosedOnExit
from streams.registry import artifacts
from streams.registry.records import (
    INFORMATIONAL_KINDS,
    ModelVersion,
    RecordKind,
    ServingState,
    default_operator,
    manual_record,
    parse_record,
    read_registry,
    read_to_end,
    serving_records,
    serving_state,
)
from streams.settings import Settings, authenticated_principal, producer_options
from trainers.candidates import Candidate
from trainers.errors import ArtifactIntegrityError

if TYPE_CHECKING:
    from streams.registry.retention import Pruning, Retention
    from streams.registry.verify import Replay, Restoration

__all__ = [
    "LIVE_KIND",
    "LiveReport",
    "ManualRecordRefused",
    "RegistryClient",
    "RegistryError",
    "RegistrySubscription",
    "UnknownModelError",
    "UnknownVersionError",
    "publish_record",
]

log = logging.getLogger("driftline.registry")

# Seconds to wait for the broker to acknowledge a manual record.
_PUBLISH_TIMEOUT = 30.0
LIVE_KIND = "live"
"""The ``kind`` of a scoring worker's live report on the metrics topic."""


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
    """A promote, trial, rollout or rollback that would not change anything, or goes the wrong
    way."""


@dataclass(frozen=True)
class LiveReport:
    """A scoring worker's report of one (model, version, arm) on live traffic.

    ``served``: events it scored; ``joined``: outcomes joined to its predictions; ``metrics``:
    ``{"rolling": {...}, "cumulative": {...}}`` with the trainer's metric names. Cumulative since
    the worker started serving the version on that arm.
    """

    model: str
    version: int
    arm: str
    served: int
    joined: int
    metrics: dict[str, Any] = field(default_factory=dict)
    ts: float | None = None

    @classmethod
    def parse(cls, value: Mapping[str, Any]) -> LiveReport | None:
        """The live report in a metrics record's ``value``, or None for any other record (a
        trainer's report) or a malformed one."""
        if value.get("kind") != LIVE_KIND:
            return None
        try:
            return cls(
                model=str(value["model"]),
                version=int(value["version"]),
                arm=str(value["arm"]),
                served=int(value.get("served", 0)),
                joined=int(value.get("joined", 0)),
                metrics=dict(value.get("metrics") or {}),
                ts=None if value.get("ts") is None else float(value["ts"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def metric(self, name: str, scope: str = "cumulative") -> float | None:
        """The value of metric ``name`` (``scope``: ``rolling`` or ``cumulative``), if any."""
        value = (self.metrics.get(scope) or {}).get(name)
        return float(value) if isinstance(value, int | float) else None


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
                    message.value,
                    where=where,
                    key=self._key,
                    on_refused=self._refuse,
                    offset=message.offset,
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
    metrics_topic
        The metrics topic, where the scoring workers publish live reports (:meth:`live`).
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
        metrics_topic: str | None = None,
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
        self.metrics_topic = metrics_topic or settings.topics.metrics
        self.redis_prefix = settings.redis_prefix if redis_prefix is None else redis_prefix
        self._settings = settings
        self._redis_url = redis_url
        self._signing_key = signing_key.encode() if isinstance(signing_key, str) else signing_key
        self._redis: redis.Redis | None = None

    def history(self, model: str) -> list[ModelVersion]:
        """Every record of ``model``, in log order (empty for an unknown model)."""
        return [record for record in self._records() if record.model == model]

    def latest(self, model: str) -> ModelVersion | None:
        """The last record of ``model`` that changed what serves it (drift, action and alert
        records change nothing, and are passed over), or None."""
        changes = [
            record for record in self.history(model) if record.kind not in INFORMATIONAL_KINDS
        ]
        return changes[-1] if changes else None

    def serving(self) -> dict[str, ModelVersion]:
        """The record of the stable version of every model."""
        return serving_records(self._records())

    def states(self) -> dict[str, ServingState]:
        """What serves every model: its stable version and the version on trial, if any."""
        return serving_state(self._records())

    def state(self, model: str) -> ServingState:
        """What serves ``model``; raises :class:`UnknownModelError`."""
        history = self.history(model)
        if not history:
            raise UnknownModelError(model)
        return serving_state(history)[model]

    def live(self, model: str) -> dict[tuple[int, str], LiveReport]:
        """The newest live report of each (version, arm) of ``model`` on the metrics topic
        (empty before a scoring worker publishes one)."""
        reports: dict[tuple[int, str], LiveReport] = {}
        for record in read_to_end(self.metrics_topic, self.kafka):
            if record.key is not None and record.key != model.encode():
                continue
            try:
                value = orjson.loads(record.value or b"")
            except orjson.JSONDecodeError:
                continue
            report = LiveReport.parse(value) if isinstance(value, dict) else None
            if report is None or report.model != model:
                continue
            known = reports.get((report.version, report.arm))
            # Several scorers' partitions interleave: the newest is the one with most served.
            if known is None or (report.ts or 0, report.served) >= (known.ts or 0, known.served):
                reports[report.version, report.arm] = report
        return reports

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

    def replay(self, model: str, version: int, **options: Any) -> Replay:
        """Learn ``version`` of ``model`` again from its lineage and compare it with the record
        (:func:`streams.registry.verify.replay`, which takes the ``options``)."""
        from streams.registry.verify import replay

        return replay(
            model,
            version,
            kafka=self.kafka,
            registry_topic=self.topic,
            signing_key=self._key(),
            redis_client=self._redis_client(),
            **options,
        )

    def prune_artifacts(
        self, retention: Retention, *, model: str | None = None, dry_run: bool = False
    ) -> Pruning:
        """Remove the artifacts of ``model``'s versions (default: every model's) that
        ``retention`` lets go, never one that serves, is on trial, can be rolled back to or is
        a manual record's target (:func:`streams.registry.retention.select`); with
        ``dry_run``, remove nothing and say what would go. Raises :class:`UnknownModelError`.
        """
        from datetime import UTC, datetime

        from streams.registry.retention import Pruning, prune, select

        records = self._records()
        if model is not None and not any(record.model == model for record in records):
            raise UnknownModelError(model)
        verdicts = select(
            records, retention, now=datetime.now(UTC), models=None if model is None else {model}
        )
        removed = prune(self._redis_client(), verdicts, dry_run=dry_run)
        return Pruning([verdict for verdict in verdicts if not verdict.removed], removed)

    def restore_artifacts(
        self, model: str | None = None, *, max_event_bytes: int
    ) -> Iterator[Restoration]:
        """Rebuild from its lineage and store again the artifact of each version of ``model``
        (of every model by default) missing from Redis; what was done with each version, in
        version order (:func:`streams.registry.verify.restore_artifacts`).

        ``max_event_bytes`` is the workers' limit on an event's size: a bigger event was
        dead-lettered, not learned. For example::

            for restoration in client.restore_artifacts("sea", max_event_bytes=1_048_576):
                print(restoration)
            # sea v1: present, sha256 9f2c...
            # sea v2: restored, sha256 41d7... rebuilt from 21000 events
        """
        from streams.registry.verify import restore_artifacts

        return restore_artifacts(
            model,
            kafka=self.kafka,
            registry_topic=self.topic,
            signing_key=self._key(),
            redis_client=self._redis_client(),
            redis_prefix=self.redis_prefix,
            max_event_bytes=max_event_bytes,
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
        """Make an earlier version serve ``model`` again (ending a trial); returns the published
        record."""
        return self._publish_manual(model, to, kind=RecordKind.ROLLBACK, reason=reason)

    def canary(self, model: str, version: int, *, fraction: float, reason: str) -> ModelVersion:
        """Put ``version`` on trial: it serves ``fraction`` of ``model``'s events, the stable
        version the rest, until a rollout or a rollback; returns the published record."""
        return self._publish_manual(
            model, version, kind=RecordKind.CANARY, reason=reason, rollout={"fraction": fraction}
        )

    def shadow(self, model: str, version: int, *, reason: str) -> ModelVersion:
        """Put ``version`` on trial as a shadow: it scores every event beside the stable version
        and serves none; returns the published record."""
        return self._publish_manual(
            model, version, kind=RecordKind.SHADOW, reason=reason, rollout={"fraction": 1.0}
        )

    def rollout(self, model: str, *, reason: str) -> ModelVersion:
        """Make the version on trial stable; raises :class:`ManualRecordRefused` without one."""
        trial = self.state(model).trial
        if trial is None:
            raise ManualRecordRefused(f"{model} has no version on trial: nothing to roll out")
        return self._publish_manual(model, trial.version, kind=RecordKind.ROLLOUT, reason=reason)

    def stop_trial(self, model: str, *, reason: str) -> ModelVersion:
        """End the trial: a ``rollback`` record that repeats the stable version; raises
        :class:`ManualRecordRefused` without a trial."""
        state = self.state(model)
        if state.trial is None:
            raise ManualRecordRefused(f"{model} has no version on trial: nothing to stop")
        return self._publish_manual(
            model, state.stable.version, kind=RecordKind.ROLLBACK, reason=reason
        )

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
        self,
        model: str,
        version: int,
        *,
        kind: RecordKind,
        reason: str,
        rollout: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        history = self.history(model)
        target = _original(history, model, version)
        state = serving_state(history)[model]
        _refuse_pointless(state, version, kind, rollout)
        # On an authenticated connection the operator is whom the broker knows; the environment
        # names one only on a plaintext cluster, and the record says so.
        principal = authenticated_principal(self.kafka)
        record = manual_record(
            target,
            kind=kind,
            previous_version=_replaced_version(state, version, kind),
            reason=reason,
            operator=principal or default_operator(),
            operator_verified=principal is not None,
            rollout=rollout,
        ).signed(self._key())
        publish_record(self.kafka, self.topic, record, timeout=_PUBLISH_TIMEOUT)
        log.info("published %s of %s v%d: %s", kind, model, version, reason)
        return record


def publish_record(
    kafka: Mapping[str, Any], topic: str, record: ModelVersion, *, timeout: float
) -> None:
    """Publish one signed registry ``record`` to ``topic`` and wait up to ``timeout`` seconds for
    the broker to acknowledge it (a producer of its own: an operator's command or a demo publishes
    one record now and then). ``kafka`` holds kafka-python settings."""
    producer = KafkaProducer(**producer_options(kafka))
    try:
        producer.send(topic, key=record.model.encode(), value=record.to_json()).get(timeout)
    finally:
        producer.close()


def _refuse_pointless(
    state: ServingState, version: int, kind: RecordKind, rollout: Mapping[str, Any] | None
) -> None:
    """Raise :class:`ManualRecordRefused` for a record that would change nothing or goes the
    wrong way."""
    stable, trial = state.stable.version, state.trial
    model = state.stable.model
    if kind in (RecordKind.CANARY, RecordKind.SHADOW):
        if version == stable:
            raise ManualRecordRefused(f"{model} v{version} is the stable version: nothing to try")
        if trial is not None and (trial.version, trial.kind, trial.rollout) == (
            version,
            kind,
            dict(rollout or {}),
        ):
            raise ManualRecordRefused(f"{model} v{version} is on trial as a {kind} already")
        return
    if version == stable and trial is None:
        raise ManualRecordRefused(f"{model} v{version} is already serving")
    if kind is RecordKind.ROLLBACK and version > stable:
        raise ManualRecordRefused(
            f"a rollback goes back to an earlier version, and v{version} is newer than the "
            f"serving v{stable}: promote it instead"
        )


def _replaced_version(state: ServingState, version: int, kind: RecordKind) -> int:
    """What a record takes out of service, for its ``previous_version``: the trial, when a
    rollback only stops it; else the stable version (which a trial runs beside)."""
    if kind is RecordKind.ROLLBACK and state.trial is not None and version == state.stable.version:
        return state.trial.version
    return state.stable.version


def _original(history: list[ModelVersion], model: str, version: int) -> ModelVersion:
    """The trainer's record of ``version`` in ``model``'s history (manual records repeat it)."""
    if not history:
        raise UnknownModelError(model)
    # Manual records repeat a version; alerts and notices name the one serving when made.
    issued = [r for r in history if not r.is_manual and r.kind not in INFORMATIONAL_KINDS]
    for record in issued:
        if record.version == version:
            return record
    known = sorted({record.version for record in issued})
    raise UnknownVersionError(model, version, known)
