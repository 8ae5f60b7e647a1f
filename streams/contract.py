"""Wire contract of driftline events: decoding, validation, encoding and dead letters.

An event record on ``driftline.events.labeled`` has the model name as key and a JSON
object as value::

    {"event_id": "e-1", "model": "churn", "ts": 1718000000.5,
     "features": {"age": 42, "plan": "pro", "trial": false, "score": null},
     "label": "churned"}

``ts`` is epoch seconds (int or float) or an ISO-8601 string; an ISO string without an
offset is read as UTC. It must lie in ``[0, 1e11)``: anything larger is almost always
epoch *milliseconds*, which would otherwise silently land 50,000 years in the future.
``features`` maps names to JSON scalars (number, string, bool or null). ``label`` is a
class (string, integer or bool) or a number; whether it fits the model's task is checked
by ``trainers.spec.check_label``, not here. Events on ``driftline.events.unlabeled`` are
the same without ``label``.

Unknown top-level fields are allowed and ignored, so producers can attach metadata and
the contract can grow without breaking older consumers.

A labeled-event or unlabeled-event record may instead carry a **batch**: a JSON array of such
objects, all of the record key's model (``[{...}, {...}]``), at most :data:`POSITION_STRIDE` of
them. The producer SDK sends batches, so that a worker pays its per-record costs (faust's
delivery, the ledger, the scorer's commit) once per batch; a single object stays valid (kcat,
other producers). :func:`decode_labeled_record` and :func:`decode_unlabeled_record` decode
either form into :class:`RecordEntry` items, one per event, each holding its event or why it is
refused: a bad event inside a batch is dead-lettered alone, with its index in the batch, and its
neighbours are learned or scored.

An event's **position**, the lineage coordinate a trainer records, is
``offset * POSITION_STRIDE + index`` (:func:`event_position`; a single-event record is index 0),
so positions increase within a partition; :func:`record_coordinate` inverts it.

Every rejection raises :class:`InvalidEvent`, whose ``code`` is one of
:class:`ReasonCode` and whose ``reason`` names the offending field. Rejected records go
to the dead-letter topic as :func:`dead_letter_record` values, which keep the original
bytes exactly (base64) so nothing is lost. :class:`ReasonCode` lists every code a
dead letter can carry, the workers' as well as the contract's, so that dashboards and
alerts can rely on a closed set.

This module does no I/O; decoding sits on the consumer hot path and is kept cheap.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from math import isfinite
from typing import Any, Generic, TypeVar

import orjson

__all__ = [
    "DEFAULT_MAX_BYTES",
    "POSITION_STRIDE",
    "Event",
    "FeatureValue",
    "InvalidEvent",
    "LabeledEvent",
    "Outcome",
    "ReasonCode",
    "RecordEntry",
    "UnlabeledEvent",
    "dead_letter_record",
    "dead_letter_source",
    "decode_dead_letter",
    "decode_labeled",
    "decode_labeled_record",
    "decode_outcome",
    "decode_unlabeled",
    "decode_unlabeled_record",
    "encode_batch",
    "encode_event",
    "encode_outcome",
    "event_position",
    "record_coordinate",
    "validate_labeled",
    "validate_outcome",
    "validate_unlabeled",
]

DEFAULT_MAX_BYTES = 1_000_000
POSITION_STRIDE = 1_000_000
"""Positions per record: a batch holds at most this many events (see :func:`event_position`)."""

FeatureValue = float | int | str | bool | None

# Timestamps at or above this are taken for epoch milliseconds sent by mistake (year 5138).
_MAX_EPOCH_SECONDS = 1e11
# orjson encodes integers only within these bounds; bigger ones must be rejected up front
# so that every validated event can be encoded again.
_MIN_INT = -(2**63)
_MAX_INT = 2**64 - 1
# Exact types only (type() is, not isinstance): a subclass such as numpy.float64 is not
# guaranteed to serialise the same way, so producers must convert with .item().
_OTHER_SCALARS = frozenset({str, bool, type(None)})
_CLASS_LABEL_TYPES = frozenset({str, bool})


class ReasonCode(StrEnum):
    """Every code of a rejected event (stable: used in metrics and dead letters)."""

    # Broken wire contract (this module).
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    EMPTY_FIELD = "empty_field"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    OVERSIZE = "oversize"
    BAD_TIMESTAMP = "bad_timestamp"
    # A valid event the workers cannot take.
    UNKNOWN_MODEL = "unknown_model"
    """No model of that name is configured."""
    LABEL_MISMATCH = "label_mismatch"
    """The label does not fit the model's task or classes."""
    MODEL_ERROR = "model_error"
    """The model raised while learning or predicting."""
    NO_VERSION = "no_version"
    """The scorer has no servable version of the model."""
    UNVERIFIED_VERSION = "unverified_version"
    """The model's versions are not signed with the scorer's key."""
    KEY_MISMATCH = "key_mismatch"
    """The record's key is not the event's model name (or it has none)."""
    WRONG_PARTITION = "wrong_partition"
    """The model is trained on another partition (a producer with another partitioner)."""
    NO_PREDICTION = "no_prediction"
    """An outcome whose event was never scored within the model's label horizon."""
    # Rejected with a plain-string reason (see dead_letter_record).
    REJECTED = "rejected"


class InvalidEvent(ValueError):
    """An event that breaks the wire contract, or that a worker cannot take.

    ``code`` is a :class:`ReasonCode` (a string with its value is accepted and converted;
    anything else raises ``ValueError``, so that no code escapes the list); ``reason`` is
    a human sentence naming the offending field.
    """

    def __init__(self, code: ReasonCode | str, reason: str) -> None:
        code = ReasonCode(code)
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason

    def __reduce__(self) -> tuple[type[InvalidEvent], tuple[ReasonCode, str]]:
        # The default pickling replays args=(message,) into __init__, which needs two.
        return (type(self), (self.code, self.reason))


# Not frozen: a frozen dataclass costs ~0.4 µs more to build, a tenth of decoding an event, and
# a worker decodes every event it learns or scores (bench/throughput.py).
@dataclass(slots=True)
class Event:
    """Fields shared by labeled and unlabeled events; ``ts`` is epoch seconds."""

    event_id: str
    model: str
    ts: float
    features: dict[str, FeatureValue]

    def to_json_object(self) -> dict[str, Any]:
        """The event as the JSON object of the wire contract."""
        return {
            "event_id": self.event_id,
            "model": self.model,
            "ts": self.ts,
            "features": self.features,
        }


@dataclass(slots=True)
class UnlabeledEvent(Event):
    """An event to score: features without a ground-truth label."""


@dataclass(slots=True)
class LabeledEvent(Event):
    """An event with its ground-truth label: a class (str, int, bool) or a number."""

    label: object
    join: tuple[str, int] | None = None
    """Set on events the scorer made by joining an outcome to its prediction: the scorer
    partition (``"<group>/<p>"``) and the join's number there, by which a trainer drops a join
    it has already learned (see :mod:`streams.workers.join`)."""

    def to_json_object(self) -> dict[str, Any]:
        """The event as the JSON object of the wire contract."""
        # Explicit base call: zero-argument super() fails in slots=True dataclasses.
        json_object = Event.to_json_object(self)
        json_object["label"] = self.label
        if self.join is not None:
            json_object["join"] = {"source": self.join[0], "seq": self.join[1]}
        return json_object


@dataclass(frozen=True, slots=True)
class Outcome:
    """The ground truth of an event scored earlier, arriving later (``driftline.events.outcomes``).

    Key: the model name. ``ts`` is when the outcome was observed (epoch seconds).
    """

    event_id: str
    model: str
    ts: float
    label: object

    def to_json_object(self) -> dict[str, Any]:
        """The outcome as the JSON object of the wire contract."""
        return {"event_id": self.event_id, "model": self.model, "ts": self.ts, "label": self.label}


def decode_labeled(raw: bytes | None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> LabeledEvent:
    """Decode and validate a labeled-event record value; raise :class:`InvalidEvent`."""
    return validate_labeled(_parse_object(raw, max_bytes))


EventType = TypeVar("EventType", LabeledEvent, UnlabeledEvent)


@dataclass(slots=True)
class RecordEntry(Generic[EventType]):
    """One event of an event record: the event, or why it is refused."""

    index: int | None
    """Its index in a batch record; None for a single-event record."""
    decoded: EventType | InvalidEvent
    json: Any = None
    """For an event of a batch, its parsed JSON (what :meth:`original` re-encodes)."""

    def original(self, value: bytes | None) -> bytes | None:
        """The event's own bytes, for its dead letter, given its record's ``value``: the value
        itself for a single-event record, the event's JSON re-encoded for one in a batch."""
        return value if self.index is None else orjson.dumps(self.json)


def decode_labeled_record(
    raw: bytes | None, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[RecordEntry[LabeledEvent]]:
    """Decode a labeled-event record, a single event or a batch, into one entry per event.

    Raises :class:`InvalidEvent` when the record as a whole is refused (no value, oversize,
    not JSON, neither an object nor an array, an empty array or one longer than
    :data:`POSITION_STRIDE`); an event that is itself invalid is an entry with its ``error``.

    Examples
    --------
    >>> event = b'{"event_id": "e-1", "model": "m", "ts": 1, "features": {}, "label": 1}'
    >>> [entry.index for entry in decode_labeled_record(event)]
    [None]
    >>> batch = decode_labeled_record(b"[" + event + b', {"model": "m"}]')
    >>> [(entry.index, type(entry.decoded).__name__) for entry in batch]
    [(0, 'LabeledEvent'), (1, 'InvalidEvent')]
    >>> batch[1].original(None)
    b'{"model":"m"}'
    """
    return _decode_record(raw, max_bytes, validate_labeled)


def decode_unlabeled_record(
    raw: bytes | None, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[RecordEntry[UnlabeledEvent]]:
    """Decode an unlabeled-event record, a single event or a batch, into one entry per event
    (refused as a whole, or event by event, as :func:`decode_labeled_record` says).

    Examples
    --------
    >>> event = b'{"event_id": "e-1", "model": "m", "ts": 1, "features": {}}'
    >>> [entry.index for entry in decode_unlabeled_record(event)]
    [None]
    >>> batch = decode_unlabeled_record(b"[" + event + b', {"model": "m"}]')
    >>> [(entry.index, type(entry.decoded).__name__) for entry in batch]
    [(0, 'UnlabeledEvent'), (1, 'InvalidEvent')]
    """
    return _decode_record(raw, max_bytes, validate_unlabeled)


def _decode_record(
    raw: bytes | None, max_bytes: int, validate: Callable[[Mapping[str, Any]], EventType]
) -> list[RecordEntry[EventType]]:
    parsed = _parse_json(raw, max_bytes)
    if type(parsed) is dict:
        try:
            return [RecordEntry(None, validate(parsed))]
        except InvalidEvent as error:
            return [RecordEntry(None, error)]
    if type(parsed) is not list:
        raise InvalidEvent(
            ReasonCode.NOT_OBJECT,
            f"payload is a JSON {_type_name(parsed)}, not an event object or an array of them",
        )
    if not parsed:
        raise InvalidEvent(ReasonCode.EMPTY_FIELD, "the batch (a JSON array) holds no event")
    if len(parsed) > POSITION_STRIDE:
        raise InvalidEvent(
            ReasonCode.OVERSIZE, f"the batch holds {len(parsed)} events, limit {POSITION_STRIDE}"
        )
    return [_batch_entry(index, obj, validate) for index, obj in enumerate(parsed)]


def _batch_entry(
    index: int, obj: Any, validate: Callable[[Mapping[str, Any]], EventType]
) -> RecordEntry[EventType]:
    try:
        if type(obj) is not dict:
            raise InvalidEvent(
                ReasonCode.NOT_OBJECT, f"batch item {index} is a JSON {_type_name(obj)}"
            )
        return RecordEntry(index, validate(obj), json=obj)
    except InvalidEvent as error:
        return RecordEntry(index, error, json=obj)


def event_position(offset: int, index: int | None) -> int:
    """The position of the event at ``index`` of the record at ``offset`` (None: a single event).

    Examples
    --------
    >>> event_position(7, None), event_position(7, 3)
    (7000000, 7000003)
    >>> record_coordinate(7000003)
    (7, 3)
    """
    return offset * POSITION_STRIDE + (index or 0)


def record_coordinate(position: int) -> tuple[int, int]:
    """The (record offset, index in the record) of an event's :func:`event_position`."""
    return divmod(position, POSITION_STRIDE)


def encode_batch(events: list[bytes]) -> bytes:
    """The value of a batch record holding ``events``, each the wire bytes of one event.

    Examples
    --------
    >>> encode_batch([b'{"a":1}', b'{"a":2}'])
    b'[{"a":1},{"a":2}]'
    """
    return b"[" + b",".join(events) + b"]"


def decode_unlabeled(raw: bytes | None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> UnlabeledEvent:
    """Decode and validate an unlabeled-event record value; raise :class:`InvalidEvent`."""
    return validate_unlabeled(_parse_object(raw, max_bytes))


def validate_labeled(obj: Mapping[str, Any]) -> LabeledEvent:
    """Validate an already-parsed event object (e.g. built by a producer)."""
    event_id, model, ts, features = _validate_common(obj)
    return LabeledEvent(event_id, model, ts, features, _validate_label(obj), _validate_join(obj))


def _validate_join(obj: Mapping[str, Any]) -> tuple[str, int] | None:
    join = obj.get("join")
    if join is None:
        return None
    source, seq = (join.get("source"), join.get("seq")) if type(join) is dict else (None, None)
    if type(source) is not str or type(seq) is not int:
        raise InvalidEvent(
            ReasonCode.WRONG_TYPE, "join must be an object with a string source and an int seq"
        )
    return source, seq


def decode_outcome(raw: bytes | None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Outcome:
    """Decode and validate an outcome record value; raise :class:`InvalidEvent`."""
    return validate_outcome(_parse_object(raw, max_bytes))


def validate_outcome(obj: Mapping[str, Any]) -> Outcome:
    """Validate an already-parsed outcome object: the label rules are those of labeled events."""
    event_id, model, ts = _validate_identity(obj)
    return Outcome(event_id, model, ts, _validate_label(obj))


def encode_outcome(outcome: Mapping[str, Any] | Outcome) -> bytes:
    """Serialise an outcome to its wire bytes (a mapping is validated first)."""
    if not isinstance(outcome, Outcome):
        outcome = validate_outcome(outcome)
    return orjson.dumps(outcome.to_json_object())


def _validate_label(obj: Mapping[str, Any]) -> object:
    try:
        label = obj["label"]
    except KeyError:
        raise InvalidEvent(ReasonCode.MISSING_FIELD, "missing field 'label'") from None
    if type(label) is float:
        if not isfinite(label):
            raise InvalidEvent(ReasonCode.NON_FINITE, f"label is {label}")
    elif type(label) is int:
        if not _MIN_INT <= label <= _MAX_INT:
            raise InvalidEvent(ReasonCode.OUT_OF_RANGE, "label integer exceeds 64 bits")
    elif type(label) not in _CLASS_LABEL_TYPES:
        raise InvalidEvent(
            ReasonCode.WRONG_TYPE,
            f"label must be a string, integer, bool or number, got {_type_name(label)}",
        )
    return label


def validate_unlabeled(obj: Mapping[str, Any]) -> UnlabeledEvent:
    """Validate an already-parsed unlabeled event object; a ``label`` field is ignored."""
    return UnlabeledEvent(*_validate_common(obj))


def encode_event(event: Mapping[str, Any] | Event) -> bytes:
    """Serialise an event to its wire bytes.

    A mapping is validated as a labeled event first (raising :class:`InvalidEvent`), so
    only contract-conforming bytes are ever produced; event objects are valid already.
    """
    if not isinstance(event, Event):
        event = validate_labeled(event)
    return orjson.dumps(event.to_json_object())


def dead_letter_record(
    raw: bytes | None,
    reason: InvalidEvent | str,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    index: int | None = None,
) -> tuple[bytes, bytes]:
    """Build the ``(key, value)`` of a dead-letter record for a rejected source record.

    The key is the source coordinate ``topic/partition/offset``: unique per source
    record, so replaying a partition dead-letters the same record under the same key.
    An event refused inside a batch record is dead-lettered alone: its ``index`` in the batch
    ends the key (``topic/partition/offset/index``) and joins the value's ``source``, and
    ``raw`` is that event's bytes (:meth:`RecordEntry.original`).
    A plain-string ``reason`` gets the code :attr:`ReasonCode.REJECTED`. The source key is kept as
    text for reading (non-UTF-8 bytes are backslash-escaped); the value bytes are kept
    exactly and come back from :func:`decode_dead_letter`.
    """
    if isinstance(reason, InvalidEvent):
        reason_code, reason_text = reason.code, reason.reason
    else:
        reason_code, reason_text = ReasonCode.REJECTED, reason
    value = {
        "reason_code": reason_code,
        "reason": reason_text,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "key": None if key is None else key.decode("utf-8", "backslashreplace"),
        "original_b64": None if raw is None else base64.b64encode(raw).decode("ascii"),
        "original_size": 0 if raw is None else len(raw),
    }
    coordinate = f"{topic}/{partition}/{offset}"
    if index is not None:
        value["source"] = {"topic": topic, "partition": partition, "offset": offset, "index": index}
        coordinate = f"{coordinate}/{index}"
    return coordinate.encode(), orjson.dumps(value)


def dead_letter_source(key: bytes | None) -> tuple[str, int, int, int | None] | None:
    """The source coordinate ``(topic, partition, offset, index)`` a dead-letter key names
    (:func:`dead_letter_record`; ``index`` is None for a whole record), or None for a key that is
    not one. Topic names cannot hold ``/``, so the key splits unambiguously."""
    try:
        topic, *numbers = (key or b"").decode("ascii").split("/")
        partition, offset, *index = (int(number) for number in numbers)
    except ValueError:  # not ASCII, too few parts, or not numbers
        return None
    if not topic or len(index) > 1:
        return None
    return topic, partition, offset, index[0] if index else None


def decode_dead_letter(value: bytes) -> dict[str, Any]:
    """Parse a dead-letter value; the result adds ``"original"``: the exact source bytes.

    ``"original"`` is ``None`` when the source record had no value (a tombstone).
    Raises :class:`InvalidEvent` if ``value`` is not a dead-letter record.
    """
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(ReasonCode.NOT_JSON, f"dead letter is not JSON: {exc}") from None
    if type(record) is not dict:
        raise InvalidEvent(ReasonCode.NOT_OBJECT, "dead letter is not a JSON object")
    if "original_b64" not in record:
        raise InvalidEvent(ReasonCode.MISSING_FIELD, "dead letter has no 'original_b64'")
    encoded = record["original_b64"]
    if encoded is None:
        record["original"] = None
        return record
    try:
        record["original"] = base64.b64decode(encoded, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise InvalidEvent(
            ReasonCode.WRONG_TYPE, "dead letter 'original_b64' is not base64"
        ) from None
    return record


def _parse_object(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    obj = _parse_json(raw, max_bytes)
    if type(obj) is not dict:
        raise InvalidEvent(
            ReasonCode.NOT_OBJECT, f"payload is a JSON {_type_name(obj)}, not an object"
        )
    return obj


def _parse_json(raw: bytes | None, max_bytes: int) -> Any:
    if raw is None:
        raise InvalidEvent(ReasonCode.NOT_JSON, "record has no value (tombstone)")
    # Checked before parsing so that a huge payload costs nothing but its length.
    if len(raw) > max_bytes:
        raise InvalidEvent(
            ReasonCode.OVERSIZE, f"payload is {len(raw)} bytes, limit is {max_bytes}"
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _parse_error(exc) from None


def _parse_error(exc: orjson.JSONDecodeError) -> InvalidEvent:
    # orjson refuses NaN/Infinity literals (which stdlib json would accept) and numbers
    # that overflow a double; those are reported as non-finite values, not garbage.
    rest = exc.doc[exc.pos : exc.pos + 8] if isinstance(exc.doc, str) else ""
    if rest.startswith(("NaN", "Infinity")):
        return InvalidEvent(
            ReasonCode.NON_FINITE,
            f"NaN/Infinity at char {exc.pos} is not valid JSON; send null for missing values",
        )
    if "infinity" in exc.msg:
        return InvalidEvent(
            ReasonCode.NON_FINITE, f"number at char {exc.pos} overflows a double (infinity)"
        )
    return InvalidEvent(ReasonCode.NOT_JSON, f"payload is not UTF-8 JSON: {exc}")


def _validate_identity(obj: Mapping[str, Any]) -> tuple[str, str, float]:
    try:
        event_id = obj["event_id"]
        model = obj["model"]
        ts = obj["ts"]
    except KeyError as exc:
        raise InvalidEvent(ReasonCode.MISSING_FIELD, f"missing field {exc}") from None
    except TypeError:
        raise InvalidEvent(
            ReasonCode.NOT_OBJECT, f"event is a {_type_name(obj)}, not an object"
        ) from None
    _check_name("event_id", event_id)
    _check_name("model", model)
    return event_id, model, _epoch_seconds(ts)


def _validate_common(
    obj: Mapping[str, Any],
) -> tuple[str, str, float, dict[str, FeatureValue]]:
    event_id, model, ts = _validate_identity(obj)
    try:
        features = obj["features"]
    except KeyError as exc:
        raise InvalidEvent(ReasonCode.MISSING_FIELD, f"missing field {exc}") from None
    if type(features) is not dict:
        raise InvalidEvent(
            ReasonCode.WRONG_TYPE,
            f"features must be an object, got {_type_name(features)}",
        )
    for name, value in features.items():
        # The common case inline (a third of the loop's time): a finite float (only then is
        # value - value zero) under a string name.
        if type(value) is not float or type(name) is not str or value - value != 0.0:
            _check_feature(name, value)
    return event_id, model, ts, features


def _check_name(field: str, value: object) -> None:
    if type(value) is not str:
        raise InvalidEvent(
            ReasonCode.WRONG_TYPE, f"{field} must be a string, got {_type_name(value)}"
        )
    if not value:
        raise InvalidEvent(ReasonCode.EMPTY_FIELD, f"{field} is empty")


def _check_feature(name: object, value: object) -> None:
    if type(name) is not str:
        raise InvalidEvent(ReasonCode.WRONG_TYPE, f"feature name {name!r} must be a string")
    if type(value) is float:
        if not isfinite(value):
            raise InvalidEvent(ReasonCode.NON_FINITE, f"feature {name!r} is {value}")
    elif type(value) is int:
        if not _MIN_INT <= value <= _MAX_INT:
            raise InvalidEvent(ReasonCode.OUT_OF_RANGE, f"feature {name!r} exceeds 64 bits")
    elif type(value) not in _OTHER_SCALARS:
        raise InvalidEvent(
            ReasonCode.WRONG_TYPE,
            f"feature {name!r} must be a number, string, bool or null, got {_type_name(value)}",
        )


def _epoch_seconds(ts: object) -> float:
    if type(ts) is float or type(ts) is int:
        try:
            seconds = float(ts)
        except OverflowError:
            raise InvalidEvent(ReasonCode.BAD_TIMESTAMP, "ts is too large") from None
    elif type(ts) is str:
        seconds = _parse_iso_timestamp(ts)
    else:
        raise InvalidEvent(
            ReasonCode.WRONG_TYPE,
            f"ts must be epoch seconds or an ISO-8601 string, got {_type_name(ts)}",
        )
    if not isfinite(seconds):
        raise InvalidEvent(ReasonCode.NON_FINITE, f"ts is {seconds}")
    if not 0 <= seconds < _MAX_EPOCH_SECONDS:
        raise InvalidEvent(
            ReasonCode.BAD_TIMESTAMP,
            f"ts {seconds!r} is outside [0, 1e11) epoch seconds (milliseconds sent?)",
        )
    return seconds


def _parse_iso_timestamp(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError, OSError):
        raise InvalidEvent(
            ReasonCode.BAD_TIMESTAMP, f"ts {text[:40]!r} is not an ISO-8601 timestamp"
        ) from None


def _type_name(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "bool"
        case dict():
            return "object"
        case list():
            return "array"
        case _:
            return type(value).__name__
