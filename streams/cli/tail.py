"""``driftline tail``: read what driftline writes to Kafka, as lines a person can read.

::

    driftline tail predictions                 # the last 20 predictions, then exit
    driftline tail dlq --model sea             # dead letters of sea's events: reason, source, bytes
    driftline tail metrics --follow            # each metrics report as it is published (Ctrl-C)
    driftline tail registry --json -n 0        # every registry record, one JSON object a line

Without ``--follow`` it reads each partition of the topic up to its end *as it was when the
command started*, prints the last ``-n`` records (0: all) and exits, so that it never waits on a
quiet topic. ``--model`` keeps one model's records. ``--json`` prints each record's value as one
JSON object per line, for ``jq``; a dead letter's ``original`` bytes are decoded there too.

Every topic is keyed by model name except the dead-letter topic, whose key is the source
coordinate: there the model is the source record's key, kept in the dead letter. Registry
records are shown only when signed with the deployment's key, as every reader of the registry
does (:mod:`streams.registry.records`).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from streams.cli.common import refuse

__all__ = ["SOURCES", "add_tail_parser", "format_record", "run"]

#: The topics ``tail`` reads, by the name a user types.
SOURCES = ("predictions", "dlq", "metrics", "registry")
_ORIGINAL_SHOWN = 200  # characters of a dead letter's original bytes in the readable form
_POLL_MS = 500


class TailError(Exception):
    """A record cannot be read: the message says which and why."""


@dataclass(frozen=True)
class Record:
    """One decoded record: its value as a JSON-able object, and which model it concerns."""

    model: str | None
    value: dict[str, Any]
    where: str


def add_tail_parser(
    commands: argparse._SubParsersAction, *, handler: Callable[[argparse.Namespace], int]
) -> None:
    """Add ``tail`` to ``driftline``'s subcommands."""
    tail = commands.add_parser(
        "tail",
        help="print predictions, dead letters, metrics or registry records readably",
        description="Print the records of one of driftline's topics. Without --follow: the "
        "last -n records present when it starts, then exit.",
    )
    tail.add_argument("source", choices=SOURCES)
    tail.add_argument("--model", default=None, help="only this model's records")
    tail.add_argument("--follow", "-f", action="store_true", help="then wait for new ones")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument(
        "-n", "--last", type=int, default=20, metavar="N", help="records shown (0: all)"
    )
    tail.set_defaults(handler=handler)


def run(args: argparse.Namespace) -> int:
    """Carry out ``driftline tail SOURCE``; returns the exit status."""
    from kafka.errors import KafkaError

    from streams.cli.common import require_broker
    from streams.settings import Settings, SettingsError

    if args.last < 0:
        return refuse("tail", f"-n must be 0 (all) or more, not {args.last}")
    try:
        settings = Settings.from_env()
        kafka = settings.kafka
        key = settings.signing_key() if args.source == "registry" else b""
        require_broker(kafka)
        topic = getattr(settings.topics, args.source)
        decode = _decoder(args.source, key)
        show: Callable[[Record], str] = (
            (lambda record: json.dumps(record.value, default=str))
            if args.json
            else (lambda record: format_record(args.source, record.value))
        )
        for record in _records(
            topic, kafka, decode, model=args.model, last=args.last, follow=args.follow
        ):
            print(show(record), flush=args.follow)
    except (SettingsError, KafkaError, TailError) as error:
        return refuse("tail", error)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how --follow ends
    except BrokenPipeError:
        sys.stderr.close()  # `driftline tail ... | head`: the reader has seen enough
    return 0


def _records(
    topic: str,
    kafka: Mapping[str, Any],
    decode: Callable[[bytes | None, bytes | None, str], Record],
    *,
    model: str | None,
    last: int,
    follow: bool,
) -> Iterator[Record]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(enable_auto_commit=False, allow_auto_create_topics=False, **kafka)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TailError(f"the topic {topic} does not exist yet (no worker has run?)")
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = {tp: end for tp, end in consumer.end_offsets(assigned).items() if end > 0}
        # Records of several partitions are shown in the order they were written.
        backlog: collections.deque[tuple[int, Record]] = collections.deque(maxlen=last or None)
        while ends:
            for tp, messages in consumer.poll(timeout_ms=_POLL_MS).items():
                for message in messages:
                    if message.offset < ends.get(tp, 0):
                        record = _matching(decode, message, model)
                        if record is not None:
                            backlog.append((message.timestamp, record))
            ends = {tp: end for tp, end in ends.items() if consumer.position(tp) < end}
        for _, record in sorted(backlog, key=lambda entry: entry[0]):
            yield record
        while follow:
            for messages in consumer.poll(timeout_ms=_POLL_MS).values():
                for message in messages:
                    record = _matching(decode, message, model)
                    if record is not None:
                        yield record
    finally:
        consumer.close()


def _matching(
    decode: Callable[[bytes | None, bytes | None, str], Record], message: Any, model: str | None
) -> Record | None:
    where = f"{message.topic}[{message.partition}]@{message.offset}"
    try:
        record = decode(message.key, message.value, where)
    except TailError as error:
        print(f"driftline tail: skipping {where}: {error}", file=sys.stderr)
        return None
    return record if model is None or record.model == model else None


def _decoder(source: str, key: bytes) -> Callable[[bytes | None, bytes | None, str], Record]:
    if source == "dlq":
        return _dead_letter
    if source == "registry":
        return lambda record_key, value, where: _registry_record(value, where, key)
    return _json_record


def _json_record(key: bytes | None, value: bytes | None, where: str) -> Record:
    try:
        decoded = json.loads(value or b"")
    except ValueError as error:
        raise TailError(f"not JSON: {error}") from None
    if not isinstance(decoded, dict):
        raise TailError("not a JSON object")
    model = decoded.get("model") or (key.decode("utf-8", "replace") if key else None)
    return Record(model, decoded, where)


def _dead_letter(key: bytes | None, value: bytes | None, where: str) -> Record:
    from streams.contract import InvalidEvent, decode_dead_letter

    try:
        letter = decode_dead_letter(value or b"")
    except InvalidEvent as error:
        raise TailError(str(error)) from None
    original: bytes | None = letter.pop("original")
    letter.pop("original_b64", None)  # the decoded text below says the same, readably
    letter["original"] = None if original is None else original.decode("utf-8", "replace")
    return Record(letter.get("key"), letter, where)


def _registry_record(value: bytes | None, where: str, key: bytes) -> Record:
    from streams.registry.records import parse_record

    record = parse_record(value, where=where, key=key)
    if record is None:
        raise TailError("not a registry record signed with this deployment's key")
    return Record(record.model, asdict(record), where)


def format_record(source: str, value: Mapping[str, Any]) -> str:
    """One readable line for a record ``value`` of ``source`` (one of :data:`SOURCES`).

    >>> format_record("predictions", {"event_id": "sea-7", "model": "sea", "version": 2,
    ...                               "prediction": True, "probabilities": {"false": 0.1,
    ...                                                                     "true": 0.9}})
    'sea v2  sea-7 -> True  (p=0.900)'
    >>> format_record("dlq", {"reason_code": "not_json", "reason": "payload is not JSON",
    ...     "source": {"topic": "driftline.events.labeled", "partition": 1, "offset": 42},
    ...     "key": "sea", "original_size": 3, "original": "{x:"})
    "not_json  driftline.events.labeled[1]@42  key=sea  payload is not JSON  original (3 B): '{x:'"
    """
    return _FORMATS[source](value)


def _prediction_line(value: Mapping[str, Any]) -> str:
    probabilities = value.get("probabilities") or {}
    chosen = probabilities.get(str(value.get("prediction")).lower()) or probabilities.get(
        str(value.get("prediction"))
    )
    confidence = f"  (p={chosen:.3f})" if isinstance(chosen, int | float) else ""
    return (
        f"{value.get('model')} v{value.get('version')}  {value.get('event_id')} -> "
        f"{value.get('prediction')}{confidence}"
    )


def _dead_letter_line(value: Mapping[str, Any]) -> str:
    source = value.get("source") or {}
    original = value.get("original")
    shown = (
        "no value (tombstone)"
        if original is None
        else repr(original[:_ORIGINAL_SHOWN] + ("…" if len(original) > _ORIGINAL_SHOWN else ""))
    )
    return (
        f"{value.get('reason_code')}  {source.get('topic')}[{source.get('partition')}]"
        f"@{source.get('offset')}  key={value.get('key')}  {value.get('reason')}  "
        f"original ({value.get('original_size')} B): {shown}"
    )


def _metrics_line(value: Mapping[str, Any]) -> str:
    if value.get("kind") == "live":
        return _live_line(value)
    parts = [
        f"{value.get('model')}  {value.get('events', 0):,} events",
        f"champion {value.get('champion')} v{value.get('version')}",
    ]
    for name, scores in (value.get("candidates") or {}).items():
        rolling = scores.get("rolling") or {}
        numbers = ", ".join(
            f"{metric} {number:.3f}"
            for metric, number in rolling.items()
            if isinstance(number, float)
        )
        parts.append(f"{name}: {numbers or 'no metrics yet'}")
    return "  ".join(parts[:2]) + "  |  " + "  |  ".join(parts[2:])


def _live_line(value: Mapping[str, Any]) -> str:
    """A scoring worker's live report of one (version, arm).

    >>> _live_line({"kind": "live", "model": "sea", "version": 3, "arm": "canary", "served": 1200,
    ...             "joined": 950, "metrics": {"rolling": {"accuracy": 0.91, "n": 500}}})
    'sea v3 canary  live: 1,200 served, 950 joined  |  rolling accuracy 0.910'
    """
    rolling = (value.get("metrics") or {}).get("rolling") or {}
    numbers = ", ".join(
        f"{metric} {number:.3f}" for metric, number in rolling.items() if isinstance(number, float)
    )
    return (
        f"{value.get('model')} v{value.get('version')} {value.get('arm')}  live: "
        f"{value.get('served', 0):,} served, {value.get('joined', 0):,} joined  |  "
        f"rolling {numbers or 'no metrics yet'}"
    )


def _registry_line(value: Mapping[str, Any]) -> str:
    previous = value.get("previous_version")
    candidate = (value.get("candidate") or {}).get("name", "")
    by = value.get("operator") or "trainer"
    return (
        f"{value.get('model')} v{value.get('version')}  {value.get('kind')}  {candidate}  "
        f"(was {'-' if previous is None else f'v{previous}'})  {value.get('created_at')}  "
        f"by {by}: {value.get('reason')}"
    )


_FORMATS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "predictions": _prediction_line,
    "dlq": _dead_letter_line,
    "metrics": _metrics_line,
    "registry": _registry_line,
}
