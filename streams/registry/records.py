"""Model versions and the registry topic, the audit log of every promotion.

Each record on ``driftline.models.registry`` (key: the model name; infinite retention) is one
:class:`ModelVersion`. Versions count 1, 2, 3, ... per model and are never reused; the artifact
they name is stored in Redis (see :mod:`streams.registry.artifacts`) before the record is published.

Only trainers issue version numbers (:class:`RecordKind` ``initial`` or ``challenger``). An
operator's promote or rollback is a *manual record* (``manual`` or ``rollback``, see
:func:`manual_record`) that says "version V serves now": it repeats V's number, candidate,
artifact and lineage, names the version it replaces in ``previous_version`` and who did it in
``operator`` (``operator_verified`` says whether the broker authenticated that name). The
version serving a model is the version of that model's LAST record in log order
(:func:`serving_records`), so a trainer's next promotion supersedes a manual one.

Trainers also publish *notices* on the registry topic, in the same signed form: ``drift`` (a
drift detector fired: the detector, the candidate whose loss drifted, the event's position and
the detector's evidence) and ``action`` (a reset copy, a refit, a shortened cooldown, or one the
rate limit suppressed, with ``evidence["cause"]`` the sequence of its drift notice); see
:mod:`trainers.actions`. They live here rather than on a topic of their own so that the audit
log of a model reads in one place and in order (a drift, its actions, the promotion they led to).
A notice changes nothing that serves (:data:`INFORMATIONAL_KINDS`, like ``alert``): it repeats
the version serving when it was made, names no artifact (:data:`NO_ARTIFACT`), and is identified
by ``(model, evidence["sequence"])``, numbered 1, 2, ... per model by the trainer, so that the
trainer worker publishes each exactly once (:mod:`streams.workers.outbox`).

A trainer's record carries the complete ``lineage`` of its version (:mod:`trainers.lineage`:
the positions learned and skipped, the records obeyed by their :attr:`ModelVersion.offset`, the
configuration), and ``libraries`` the code that learned it, so that ``driftline registry verify``
can learn it again (:mod:`streams.registry.verify`); records published before that lack it and
are refused by name there, not misread.

Every record is signed (:meth:`ModelVersion.signed`) with the deployment's key, the one that
signs artifacts: an HMAC-SHA256 over the scheme ``driftline-record/1`` and the canonical JSON of
the record without its ``signature``. The artifact's own signature only says which model version
the BYTES are; without this one, whoever can write to the registry topic could publish a record
that reuses a correctly signed artifact (a rollback to an old version, a "new" version naming an
old artifact, an edited reason or operator) and every reader would obey it. Readers therefore
refuse what nobody with the key wrote: :func:`read_registry`, :class:`RegistrySubscription
<streams.registry.client.RegistrySubscription>` and :func:`verified` skip such records with a
logged error, and loading one raises :class:`RecordSignatureError`.

The signature covers every field of the record as published, including fields a newer writer
added that this reader does not know: those are kept aside when parsing, so that old readers
still verify (and ignore) newer records.
"""

from __future__ import annotations

import dataclasses
import functools
import getpass
import hmac
import logging
import os
import platform
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import TopicAuthorizationFailedError

from trainers.errors import ArtifactIntegrityError
from trainers.serialization import hmac_sha256_hex

if TYPE_CHECKING:
    from trainers.actions import Notice
    from trainers.trainer import Promotion

__all__ = [
    "INFORMATIONAL_KINDS",
    "MANUAL_KINDS",
    "NOTICE_KINDS",
    "NO_ARTIFACT",
    "OPERATOR_ENV",
    "OPERATOR_KINDS",
    "RECORD_SIGNATURE_SCHEME",
    "ArtifactRef",
    "ModelVersion",
    "RecordKind",
    "RecordSignatureError",
    "ServingState",
    "default_operator",
    "library_versions",
    "manual_record",
    "parse_record",
    "read_registry",
    "read_to_end",
    "serving_records",
    "serving_state",
    "verified",
    "version_before",
]


class RecordKind(StrEnum):
    """What a registry record says, as its ``kind`` field holds it (the JSON value)."""

    INITIAL = "initial"
    """A trainer's first champion of a model: serves at once."""
    CHALLENGER = "challenger"
    """A trainer's challenger that beat the champion: serves at once (``direct`` rollout)."""
    REFRESH = "refresh"
    """A fresher copy of the champion the trainer keeps learning: serves at once (``direct``)."""
    CANARY = "canary"
    """A version on trial that serves ``rollout["fraction"]`` of the events, the rest staying
    with the stable version, until a ``rollout`` or a ``rollback`` ends the trial."""
    SHADOW = "shadow"
    """A version on trial that scores every event beside the stable version, never served."""
    MANUAL = "manual"
    """An operator's promote: the version serves as stable at once."""
    ROLLOUT = "rollout"
    """The version on trial becomes stable (the guardrail's decision, or an operator's)."""
    ROLLBACK = "rollback"
    """Back to an earlier version as stable; a trial running is stopped."""
    ALERT = "alert"
    """The stable version's live metric fell below its own level: no change of what serves."""
    DRIFT = "drift"
    """A trainer's drift detector fired (a notice, see :data:`NOTICE_KINDS`)."""
    ACTION = "action"
    """What a trainer did about a drift, or that the rate limit stopped (a notice)."""


NEW_VERSION_KINDS = frozenset(
    {
        RecordKind.INITIAL,
        RecordKind.CHALLENGER,
        RecordKind.REFRESH,
        RecordKind.CANARY,
        RecordKind.SHADOW,
    }
)
"""Kinds a trainer issues a new version number with (operators may publish a trial of an
existing version as ``canary`` or ``shadow`` too, repeating its number)."""

TRIAL_KINDS = frozenset({RecordKind.CANARY, RecordKind.SHADOW})
"""Kinds that put a version on trial beside the stable one."""

MANUAL_KINDS = frozenset({RecordKind.MANUAL, RecordKind.ROLLBACK})
"""Kinds of the records that make an earlier version stable by hand (:attr:`ModelVersion.is_manual`,
which the trainer adopts as its champion); they never issue a version number."""

OPERATOR_KINDS = MANUAL_KINDS | TRIAL_KINDS | {RecordKind.ROLLOUT}
"""Kinds an operator may publish (:func:`manual_record`): the manual ones, a trial of an existing
version, and the end of a trial. Repeating a version, none of them issues a number."""

NOTICE_KINDS = frozenset({RecordKind.DRIFT, RecordKind.ACTION})
"""Kinds of a trainer's notices (:class:`trainers.actions.Notice`): they name no artifact
(:data:`NO_ARTIFACT`), repeat the version serving when they were made, and are numbered per model
by ``evidence["sequence"]`` (:attr:`ModelVersion.notice_sequence`), their identity."""

INFORMATIONAL_KINDS = NOTICE_KINDS | {RecordKind.ALERT}
"""Kinds that change nothing that serves: :func:`serving_state` and the readers of artifacts skip
them."""

OPERATOR_ENV = "DRIFTLINE_OPERATOR"

RECORD_SIGNATURE_SCHEME = "driftline-record/1"
"""Names the signed message's format, so that a future format can never verify against this one
(nor an artifact signature, whose scheme differs, against a record's)."""

log = logging.getLogger("driftline.registry")


class RecordSignatureError(ArtifactIntegrityError):
    """A registry record that nobody with the signing key wrote: unsigned, forged or edited.

    An :class:`~trainers.errors.ArtifactIntegrityError`, so that whoever refuses a model that
    does not check out refuses a record that does not either.
    """


@dataclass(frozen=True)
class ArtifactRef:
    """Where a model's bytes live and how to check them."""

    key: str
    sha256: str
    size: int
    signature: str


NO_ARTIFACT = ArtifactRef(key="", sha256="", size=0, signature="")
"""The artifact a notice names: none."""


@dataclass(frozen=True)
class ModelVersion:
    """One record of the registry topic; ``signature`` is None until :meth:`signed`."""

    model: str
    version: int
    kind: RecordKind
    candidate: dict[str, Any]
    previous_version: int | None
    reason: str
    evidence: dict[str, Any]
    lineage: dict[str, Any]
    artifact: ArtifactRef
    libraries: dict[str, str] = field(default_factory=lambda: library_versions())
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    operator: str | None = None
    rollout: dict[str, Any] | None = None
    """For a trial (``canary``, ``shadow``): ``{"fraction": f}`` of the events it serves (1.0 for
    a shadow, which scores all of them and serves none)."""
    operator_verified: bool | None = None
    """For a manual record: whether ``operator`` is the principal the broker authenticated the
    publisher as (True), or a name from the environment (False, a plaintext cluster). None in a
    trainer's record, and in manual records written before the field existed: left out of the
    published JSON then, so that their signatures still verify."""
    signature: str | None = None

    def __post_init__(self) -> None:
        # A plain string (as Promotion.kind and JSON hold it) becomes its RecordKind; an unknown
        # one raises ValueError.
        object.__setattr__(self, "kind", RecordKind(self.kind))

    @classmethod
    def from_promotion(cls, promotion: Promotion, artifact: ArtifactRef) -> ModelVersion:
        """The (unsigned) record of a trainer's ``promotion``, whose stored artifact is
        ``artifact``; a trial (``canary``, ``shadow``) carries the promotion's ``rollout``."""
        rollout = promotion.rollout
        return cls(
            model=promotion.model,
            version=promotion.version,
            kind=RecordKind(promotion.kind),
            candidate={"name": promotion.candidate, "params": promotion.candidate_params},
            previous_version=promotion.previous_version,
            reason=promotion.reason,
            evidence=promotion.evidence,
            lineage=promotion.lineage,
            artifact=artifact,
            rollout=None if rollout is None else dict(rollout),
        )

    @classmethod
    def from_notice(cls, notice: Notice, version: int) -> ModelVersion:
        """The (unsigned) record of a trainer's drift or action ``notice``, made while
        ``version`` served (0 before the first); its sequence number goes in the evidence."""
        return cls(
            model=notice.model,
            version=version,
            kind=RecordKind(notice.kind),
            candidate={"name": notice.candidate},
            previous_version=None,
            reason=notice.reason,
            evidence={"sequence": notice.sequence, **notice.evidence},
            lineage=notice.lineage,
            artifact=NO_ARTIFACT,
        )

    @property
    def notice_sequence(self) -> int | None:
        """A notice's number among its model's notices (its identity); None for other kinds."""
        return self.evidence.get("sequence") if self.kind in NOTICE_KINDS else None

    @property
    def offset(self) -> int | None:
        """The record's offset in the registry topic, when it was read there (None otherwise):
        the trainer's lineage names the records it obeyed by it."""
        return getattr(self, "_offset", None)

    @property
    def is_manual(self) -> bool:
        """Whether an operator published this record (a promote or a rollback)."""
        return self.kind in MANUAL_KINDS

    def signed(self, key: bytes) -> ModelVersion:
        """This record, signed with ``key`` (the deployment's signing key)."""
        return dataclasses.replace(self, signature=hmac_sha256_hex(key, self._signed_message()))

    def verify(self, key: bytes) -> None:
        """Raise :class:`RecordSignatureError` unless someone with ``key`` signed this record as
        it is."""
        if not self.signature:
            raise RecordSignatureError(f"{self._identity()} is unsigned: refused")
        expected = hmac_sha256_hex(key, self._signed_message())
        if not hmac.compare_digest(expected, str(self.signature).lower()):
            raise RecordSignatureError(
                f"{self._identity()} has a bad signature: not signed with this key as it reads "
                "(forged or edited)"
            )

    def to_json(self) -> bytes:
        return orjson.dumps(self._published_fields(), option=orjson.OPT_SERIALIZE_NUMPY)

    def _published_fields(self) -> dict[str, Any]:
        fields = asdict(self)
        for name in _OMITTED_WHEN_NONE:
            if fields[name] is None:
                del fields[name]
        return fields

    @classmethod
    def from_json(cls, raw: bytes) -> ModelVersion:
        """Parse a record; fields a newer writer added are ignored, so old readers keep working.

        Raises ``orjson.JSONDecodeError`` (a ``ValueError``), ``AttributeError``, ``KeyError`` or
        ``TypeError`` for a malformed record, and ``ValueError`` for an unknown ``kind``.
        """
        data = orjson.loads(raw)
        known = {name: value for name, value in data.items() if name in _FIELD_NAMES}
        record = cls(**{**known, "artifact": ArtifactRef(**data["artifact"])})
        # Kept out of the fields (and of equality), but covered by the writer's signature.
        unknown = {name: value for name, value in data.items() if name not in _FIELD_NAMES}
        object.__setattr__(record, "_unknown_fields", unknown)
        return record

    def _signed_message(self) -> bytes:
        content = {**getattr(self, "_unknown_fields", {}), **self._published_fields()}
        del content["signature"]
        # A JSON round trip first, so that the signer hashes what a reader will parse (numpy
        # scalars become numbers, tuples lists); sorted keys make the encoding canonical.
        content = orjson.loads(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY))
        return orjson.dumps([RECORD_SIGNATURE_SCHEME, content], option=orjson.OPT_SORT_KEYS)

    def _identity(self) -> str:
        by = f" by {self.operator}" if self.operator else ""
        return f"the {self.kind} record of {self.model} v{self.version}{by}"


_FIELD_NAMES = frozenset(ModelVersion.__dataclass_fields__)
# Fields added after records were first signed: absent from older records, so absent from the
# JSON (and the signed message) of every record that leaves them unset.
_OMITTED_WHEN_NONE = ("operator_verified",)


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
    kind: RecordKind,
    previous_version: int | None,
    reason: str,
    operator: str,
    operator_verified: bool = False,
    rollout: Mapping[str, Any] | None = None,
) -> ModelVersion:
    """The record that makes ``target`` (a trainer's record) serve again, by an operator's hand:
    as stable (``manual``, ``rollback``, ``rollout``) or on trial (``canary``, ``shadow``; see
    :data:`OPERATOR_KINDS`).

    It repeats ``target``'s version, candidate, artifact, lineage and libraries: manual records
    never issue a version number, and the artifact stays the one the trainer signed. A trial
    needs ``rollout={"fraction": f}``, 0 < f <= 1 (1 for a shadow, which scores every event); no
    other kind takes one. ``operator_verified`` says whether ``operator`` is the principal the
    broker authenticated (see :attr:`ModelVersion.operator_verified`). The record is unsigned:
    sign it (:meth:`ModelVersion.signed`) before publishing it.
    """
    kind = RecordKind(kind)
    if kind not in OPERATOR_KINDS:
        raise ValueError(
            f"a manual record's kind is one of {sorted(OPERATOR_KINDS)}, not {kind.value!r}"
        )
    if not reason.strip():
        raise ValueError("a manual record needs a reason")
    _check_rollout(kind, rollout)
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
        operator_verified=operator_verified,
        rollout=None if rollout is None else dict(rollout),
    )


def _check_rollout(kind: RecordKind, rollout: Mapping[str, Any] | None) -> None:
    if kind not in TRIAL_KINDS:
        if rollout is not None:
            raise ValueError(f"only a trial (canary, shadow) has a rollout, not a {kind} record")
        return
    fraction: Any = (rollout or {}).get("fraction")
    # bool is an int: True must not read as a fraction of 1.
    if not (type(fraction) in (int, float) and 0 < fraction <= 1):
        raise ValueError(f"a {kind} needs a traffic fraction in (0, 1], not {fraction!r}")
    if kind is RecordKind.SHADOW and fraction != 1:
        raise ValueError(f"a shadow scores every event: its fraction is 1, not {fraction!r}")


def serving_records(records: Iterable[ModelVersion]) -> dict[str, ModelVersion]:
    """The record of the stable version, per model (see :func:`serving_state`)."""
    return {model: state.stable for model, state in serving_state(records).items()}


@dataclass(frozen=True)
class ServingState:
    """What serves one model: its stable version, and the version on trial beside it, if any."""

    stable: ModelVersion
    trial: ModelVersion | None = None

    @property
    def canary_fraction(self) -> float:
        """The share of events the trial serves (0 without a canary; a shadow serves none)."""
        if self.trial is None or self.trial.kind is not RecordKind.CANARY:
            return 0.0
        return float((self.trial.rollout or {}).get("fraction", 0.0))


def serving_state(records: Iterable[ModelVersion]) -> dict[str, ServingState]:
    """Per model, what its records (in log order) say serves now.

    A record that is not informational (an ``alert``, a ``drift`` or an ``action``: see
    :data:`INFORMATIONAL_KINDS`) or a trial makes its version the stable one and ends any trial;
    a ``canary`` or ``shadow`` record puts its version on trial beside the stable one (or makes
    it stable, for a model that has none yet).

    >>> ref = ArtifactRef(key="k", sha256="0", size=1, signature="s")
    >>> def record(version, kind):
    ...     return ModelVersion("sea", version, kind, {}, None, "", {}, {}, ref)
    >>> log = [record(1, "initial"), record(2, "canary"), record(2, "rollback")]
    >>> [(s.stable.version, s.trial and s.trial.version) for s in serving_state(log[:2]).values()]
    [(1, 2)]
    >>> state = serving_state(log)["sea"]
    >>> state.stable.version, state.stable.kind.value, state.trial
    (2, 'rollback', None)
    """
    states: dict[str, ServingState] = {}
    for record in records:
        current = states.get(record.model)
        if record.kind in INFORMATIONAL_KINDS:
            continue
        if record.kind in TRIAL_KINDS and current is not None:
            states[record.model] = ServingState(current.stable, record)
        else:
            states[record.model] = ServingState(record)
    return states


def version_before(records: Iterable[ModelVersion], version: int) -> int | None:
    """The newest version a trainer issued (a record that is not manual) older than ``version``,
    among one model's ``records``: where a rollback from ``version`` goes by default. None when
    there is none.

    >>> ref = ArtifactRef(key="k", sha256="0", size=1, signature="s")
    >>> log = [ModelVersion("sea", v, "challenger", {}, None, "", {}, {}, ref) for v in (1, 2, 3)]
    >>> version_before(log, 3), version_before(log, 1)
    (2, None)
    """
    return max(
        (r.version for r in records if not r.is_manual and r.version < version), default=None
    )


def library_versions() -> dict[str, str]:
    """Versions of what trained and can load an artifact; ``driftline-revision`` is the git
    revision of driftline's source when it runs from a repository (an editable install), with
    ``-dirty`` when the source differs from it."""
    versions = {"python": platform.python_version()}
    for package in ("driftline", "river", "scikit-learn", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    revision = source_revision()
    if revision is not None:
        versions["driftline-revision"] = revision
    return versions


@functools.cache
def source_revision() -> str | None:
    """The git revision driftline's source is at, None when it is not a git work tree (an
    installed wheel) or git is not installed."""
    source = Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return None
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return described.stdout.strip() or None


def verified(records: Iterable[ModelVersion], key: bytes) -> list[ModelVersion]:
    """The ``records`` someone with ``key`` signed, in order; the others are logged and dropped."""
    kept = []
    for record in records:
        try:
            record.verify(key)
        except RecordSignatureError as error:
            log.error("skipping a registry record: %s", error)
        else:
            kept.append(record)
    return kept


def read_to_end(
    topic: str, kafka: Mapping[str, Any], *, timeout_ms: int = 10_000
) -> Iterator[ConsumerRecord]:
    """Every record of ``topic`` from its beginning to its end as it was when reading started,
    partition by partition; nothing for a topic that does not exist (it is not created).

    Raises ``TopicAuthorizationFailedError`` when the broker does not let this client read
    ``topic``: an empty answer would claim the topic holds nothing."""
    consumer = KafkaConsumer(
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        consumer_timeout_ms=timeout_ms,
        **kafka,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not assigned:
            _refuse_if_hidden(topic, kafka)
            return
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        remaining = {tp: end for tp, end in consumer.end_offsets(assigned).items() if end > 0}
        if not remaining:
            return
        for message in consumer:
            tp = TopicPartition(message.topic, message.partition)
            if message.offset < remaining.get(tp, 0):
                yield message
            if message.offset + 1 >= remaining.get(tp, 0):
                remaining.pop(tp, None)
            if not remaining:
                return
        if remaining:
            raise TimeoutError(f"the topic {topic} was not read to its end")
    finally:
        consumer.close()


def _refuse_if_hidden(topic: str, kafka: Mapping[str, Any]) -> None:
    """Raise ``TopicAuthorizationFailedError`` if the broker's ACLs hide ``topic`` from this
    client: its metadata of all topics leaves such a topic out, as if it did not exist, and only
    a request naming the topic says why."""
    admin = KafkaAdminClient(**kafka)
    try:
        (description,) = admin.describe_topics([topic])
    finally:
        admin.close()
    if description["error_code"] == TopicAuthorizationFailedError.errno:
        raise TopicAuthorizationFailedError({topic})


def read_registry(
    topic: str, kafka: Mapping[str, Any], *, key: bytes, timeout_ms: int = 10_000
) -> Iterator[ModelVersion]:
    """Every record of the registry topic signed with ``key``, from its beginning to its current
    end, in order.

    ``kafka`` holds kafka-python settings (see :attr:`streams.settings.Settings.kafka`). A topic
    that does not exist yet holds no versions. A record that is not a model version, or that
    nobody with ``key`` signed, is logged and skipped: one bad record must not stop every reader
    of the registry.
    """
    for record in read_to_end(topic, kafka, timeout_ms=timeout_ms):
        where = f"{topic}[{record.partition}]@{record.offset}"
        parsed = parse_record(record.value, where=where, key=key, offset=record.offset)
        if parsed is not None:
            yield parsed


def parse_record(
    raw: bytes | None,
    *,
    where: str,
    key: bytes,
    on_refused: Callable[[ModelVersion, RecordSignatureError], None] | None = None,
    offset: int | None = None,
) -> ModelVersion | None:
    """A registry record's value as a :class:`ModelVersion`, or None (logged) if it is not one
    or nobody with ``key`` signed it; ``where`` says where it was read, for the log.

    ``on_refused``, when given, is told of each record that does not verify instead of the log;
    ``offset``, the record's offset in the topic, becomes :attr:`ModelVersion.offset`.
    """
    try:
        record = ModelVersion.from_json(raw or b"")
    except (AttributeError, KeyError, TypeError, ValueError) as error:  # JSONDecodeError too
        log.error("skipping malformed registry record %s: %s", where, error)
        return None
    object.__setattr__(record, "_offset", offset)
    try:
        record.verify(key)
    except RecordSignatureError as error:
        if on_refused is None:
            log.error("skipping registry record %s: %s", where, error)
        else:
            on_refused(record, error)
        return None
    return record
