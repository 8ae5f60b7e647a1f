"""What the dead-letter topic already holds of a partition's events past its checkpoint.

A trainer that crashes after its dead letters reached the broker and before its checkpoint saved
the events that made them replays those events; without a look at the topic it would publish the
same dead letters again. A dead letter's key is its source coordinate
(:func:`streams.contract.dead_letter_record`), so the topic tells which of a partition's events
past the cursor are dead-lettered already. The checkpoint keeps a **mark**, the offset of the
dead-letter topic from which such dead letters may be (see :mod:`streams.workers.ledger`, steps 1
and 5b), so that a new owner reads only what was written since, never the whole topic, which is
kept forever.

The dead-letter topic has one partition (:func:`streams.admin.ensure_topics`): one log, in which
one producer's records are in the order it sent them.

The reading itself, :func:`read_since` (what topics hold past given offsets, and their ends),
serves the scorer's recall too (:mod:`streams.workers.join`, step 1), over the dead-letter and
predictions topics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import TopicAuthorizationFailedError

from streams.contract import dead_letter_source

__all__ = [
    "DEAD_LETTER_PARTITION",
    "ReadDeadLetters",
    "ReadSince",
    "Recall",
    "Tail",
    "TailRecord",
    "read_dead_letters",
    "read_since",
    "recalled",
]

log = logging.getLogger("driftline.trainer")

DEAD_LETTER_PARTITION = 0
_FETCH_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Recall:
    """The dead letters of one source partition's events past a cursor, as the topic holds them."""

    end: int
    """The dead-letter topic's end offset when it was read: whatever is sent later comes after."""
    keys: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    """Per dead-letter key, the offset of its source record and its own offset in the topic."""


ReadDeadLetters = Callable[[str, int, int, "int | None"], Awaitable[Recall]]
"""``(source topic, source partition, cursor, mark)``: the :class:`Recall` of the source
partition's events past ``cursor``, reading the dead-letter topic from offset ``mark`` to its end
(``None``: from its end, nothing)."""


def recalled(
    records: Iterable[tuple[bytes | None, int]],
    *,
    end: int,
    source_topic: str,
    source_partition: int,
    after: int,
) -> Recall:
    """The :class:`Recall` of the dead-letter records ``(key, offset)`` read up to ``end``: those
    of ``source_topic[source_partition]`` records past ``after``."""
    keys: dict[bytes, tuple[int, int]] = {}
    for key, offset in records:
        source = dead_letter_source(key)
        if key is None or source is None or source[:2] != (source_topic, source_partition):
            continue  # another partition's, a scorer's, or not a dead letter of driftline's
        if source[2] > after:
            keys[key] = (source[2], offset)
    return Recall(end=end, keys=keys)


def read_dead_letters(
    topic: str,
    kafka: Mapping[str, Any],
    *,
    source_topic: str,
    source_partition: int,
    after: int,
    start: int | None,
) -> Recall:
    """Read the dead-letter ``topic`` from offset ``start`` (``None``: its end) to its end as it
    is now, for the :func:`recalled` dead letters of ``source_topic[source_partition]`` records
    past ``after``.

    Blocking (kafka-python): the trainer runs it in a thread. Raises ``kafka.errors.KafkaError``
    or ``TimeoutError`` when the broker cannot be read: the caller retries, as it must not replay
    without knowing. A topic that does not exist yet holds nothing; one with more partitions than
    its single one (made by hand) is not read: the replay may then repeat dead letters, as it did
    before there was a mark, but never loses one.
    """
    where = (topic, DEAD_LETTER_PARTITION)
    tail = read_since(kafka, [topic], {} if start is None else {where: start})
    end = tail.ends.get(where, 0)
    if {partition for _, partition in tail.ends} - {DEAD_LETTER_PARTITION}:
        log.warning(
            "%s has %d partitions, not one: dead letters of a replay are not looked up",
            topic,
            len(tail.ends),
        )
        return Recall(end=end)
    return recalled(
        ((record.key, record.offset) for record in tail.records),
        end=end,
        source_topic=source_topic,
        source_partition=source_partition,
        after=after,
    )


@dataclass(frozen=True)
class TailRecord:
    """A record a :func:`read_since` found."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Tail:
    """What some topics held past given offsets, when they were read."""

    ends: dict[tuple[str, int], int]
    """The end offset of every partition of the topics read: whatever is sent later comes after."""
    records: list[TailRecord] = field(default_factory=list)
    """The records from each start offset asked for to its partition's end, in each partition's
    order."""


ReadSince = Callable[[Mapping[tuple[str, int], int]], Awaitable[Tail]]
"""``starts``: the :class:`Tail` of a worker's topics, each ``(topic, partition)`` of ``starts``
read from its offset to its end (a reader bound to its topics and cluster; see
:func:`read_since`)."""


def read_since(
    kafka: Mapping[str, Any],
    topics: Collection[str],
    starts: Mapping[tuple[str, int], int],
) -> Tail:
    """The end offsets of every partition of ``topics``, and the records of each ``(topic,
    partition)`` of ``starts`` from its offset (or the partition's first one kept, if later) to
    that end.

    Blocking (kafka-python): workers run it in a thread. Raises ``kafka.errors.KafkaError`` or
    ``TimeoutError`` when the broker cannot be read (the caller retries: what it would do without
    knowing may publish twice). A topic that does not exist yet has no partitions. A topic the
    worker's principal may not read (no READ grant) gives no records, with a warning: the caller
    then publishes again what it cannot check, twice rather than never.
    """
    consumer = KafkaConsumer(
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        consumer_timeout_ms=_FETCH_TIMEOUT_MS,
        **kafka,
    )
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return Tail(ends={})
        ends = consumer.end_offsets(partitions)
        beginnings = consumer.beginning_offsets(partitions)
        firsts = {
            tp: max(starts[where], beginnings[tp])
            for tp in partitions
            if (where := (tp.topic, tp.partition)) in starts
        }
        todo = {tp: first for tp, first in firsts.items() if first < ends[tp]}
        tail = Tail(ends={(tp.topic, tp.partition): end for tp, end in ends.items()})
        try:
            tail.records.extend(_read(consumer, todo, ends))
        except TopicAuthorizationFailedError as error:
            log.warning("%s cannot be read (%s): what it holds is not looked up", topics, error)
        return tail
    finally:
        consumer.close()


def _read(
    consumer: KafkaConsumer, firsts: dict[TopicPartition, int], ends: Mapping[TopicPartition, int]
) -> Iterator[TailRecord]:
    """The records of each partition from its first offset to its end (excluded)."""
    if not firsts:
        return
    consumer.assign(list(firsts))
    for tp, first in firsts.items():
        consumer.seek(tp, first)
    waiting = set(firsts)
    idle_since = time.monotonic()
    while waiting:
        fetched = consumer.poll(timeout_ms=1_000)
        for tp, messages in fetched.items():
            for message in messages:
                if message.offset < ends[tp]:
                    yield TailRecord(
                        tp.topic, tp.partition, message.offset, message.key, message.value
                    )
        done = {tp for tp in waiting if consumer.position(tp) >= ends[tp]}
        if done:
            consumer.pause(*done)
            waiting -= done
        if fetched:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > _FETCH_TIMEOUT_MS / 1000:
            raise TimeoutError(f"{sorted(waiting)} not read up to their ends")
