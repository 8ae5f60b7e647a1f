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
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from streams.contract import dead_letter_source

__all__ = ["DEAD_LETTER_PARTITION", "ReadDeadLetters", "Recall", "read_dead_letters", "recalled"]

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
    consumer = KafkaConsumer(
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        consumer_timeout_ms=_FETCH_TIMEOUT_MS,
        **kafka,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            return Recall(end=0)
        tp = TopicPartition(topic, DEAD_LETTER_PARTITION)
        end = consumer.end_offsets([tp])[tp]
        if partitions != {DEAD_LETTER_PARTITION}:
            log.warning(
                "%s has %d partitions, not one: dead letters of a replay are not looked up",
                topic,
                len(partitions),
            )
            return Recall(end=end)
        # Dead letters are kept forever; a deletion would only make this read shorter.
        first = max(end if start is None else start, consumer.beginning_offsets([tp])[tp])
        if first >= end:
            return Recall(end=end)
        consumer.assign([tp])
        consumer.seek(tp, first)
        keys = [(message.key, message.offset) for message in _until(consumer, end)]
        if not keys or keys[-1][1] + 1 < end:
            raise TimeoutError(f"{topic} was not read from offset {first} to its end {end}")
        return recalled(
            keys,
            end=end,
            source_topic=source_topic,
            source_partition=source_partition,
            after=after,
        )
    finally:
        consumer.close()


def _until(consumer: KafkaConsumer, end: int) -> Iterator[Any]:
    """The consumer's messages up to offset ``end`` (excluded); fewer if it times out first."""
    for message in consumer:
        if message.offset < end:
            yield message
        if message.offset + 1 >= end:
            return
