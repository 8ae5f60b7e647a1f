"""The partition ledger: which partitions a trainer worker owns, how far each is learned and saved.

Exactly-once learning on top of at-least-once delivery. faust delivers each partition's events
in order (one agent, ``concurrency=1``, no automatic acknowledgements), commits only offsets
that were acknowledged, and after every rebalance seeks back to the committed offsets. The
ledger keeps model state and committed offsets in step, per partition, in these steps:

1. **claim**: on the first event of a partition, one atomic script bumps its epoch (fencing out
   any previous owner) and reads its signed checkpoint; the models are restored from it. A
   checkpoint that does not verify (:class:`~streams.workers.checkpoint.CheckpointRefused`) is
   never replaced by a fresh start: the partition is paused until an operator acts. Then
   **recall**: the dead-letter topic is read from the checkpoint's dead-letter mark to its end
   (:mod:`streams.workers.deadletters`), for the dead letters of events past the cursor that a
   previous owner delivered before it crashed. A checkpoint without a mark (a new partition, or
   one saved by an older worker) is read from the topic's end, nothing, and saved again at once
   with that end as its mark, before anything is learned: from then on a crash at any point
   leaves a mark behind.
2. **skip**: a record at or before the cursor is already in the restored state: acknowledge it.
3. **advance**: set the cursor to the record's offset *before* it is learned, so that a
   checkpoint taken after it (a promotion checkpoints at once) covers it.
4. **learn**: the caller lets the models learn every event of the record (one, or a batch:
   :func:`streams.contract.decode_labeled_record`), queues their outputs in the
   :class:`~streams.workers.outbox.Outbox` (dead letters through
   :meth:`~PartitionLedger.dead_letter`, which sends none that was recalled), and
   :meth:`~PartitionLedger.weigh` counts the
   record as its events. Only then may a checkpoint come: a record is learned whole or not at
   all, so a checkpoint never holds part of a batch and a replay after a crash learns whole
   records, none of whose events are in the restored state.
5. **checkpoint**, when due (every ``checkpoint_every`` events or ``checkpoint_interval``
   seconds) and on every promotion:

   a. **flush**: every dead letter and registry record is acknowledged by the broker, and every
      waiting promotion is published; if one still waits for Redis, stop here;
   b. **persist**: save each changed partition's cursor, snapshots and dead-letter mark in one
      fenced, signed write. The mark is the lowest offset of a recalled dead letter still past
      the cursor, or else one past the last dead letter the broker acknowledged to this worker
      (at least the topic's end at the claim): the ones it sends from now on land after it, and
      the flush just acknowledged every earlier one;
   c. **commit**: acknowledge the partition's records to faust, which commits them later.

6. **release**: on a revoke, checkpoint, then forget the partitions.

Invariants, checked where they could break and raised as :class:`InvariantViolated`:

- **I1** the committed Kafka offset never passes the saved cursor: a record is acknowledged only
  by a commit whose persisted cursor is at or after it (or by a skip, for records at or before
  the restored cursor);
- **I2** every event of every record at or before the cursor is in the saved state: the cursor
  only moves forward, one admitted record at a time, and a persist saves every model changed
  since the last;
- **I4** no checkpoint covers an event whose promotion still waits: persist refuses while the
  outbox holds a waiting promotion;
- **I6** no checkpoint covers an event whose tracked outputs (its dead letters) are not
  acknowledged: persist refuses while the outbox holds an undelivered one, so that a delivery
  that fails is sent again (or the partition stops) before the offset is committed, never
  dropped while the checkpoint moves on;
- **I7** a dead letter is published once: no dead letter is sent for a partition before its
  recall, none that the recall found in the topic is sent again, and the mark saved never passes
  a dead letter of an event after the cursor.

The outbox keeps the other two (I3, I5). Around the steps:

- **fencing**: a save refused because another worker claimed the partition since
  (:class:`~streams.workers.checkpoint.CheckpointFenced`) means this worker's state for it is
  stale: it forgets the partition and gives it up, so the group reassigns it at once instead of
  letting it stall until the next rebalance;
- **backoff**: a Redis error, or a Kafka one (a delivery, the recall's read), is retried after
  0.5 s, doubling to 30 s;
- **backpressure**: past ``max_unacked`` events not yet acknowledged (Redis or Kafka away), the
  agent waits for a checkpoint to succeed before it takes another record, so a long outage does
  not grow memory without bound (faust's flow control stops fetching once its buffer is full).

A dead letter can still come twice in two cases no mark can see: a previous owner that still
runs after the claim (fenced, it learns on until its next save), and a record sent again after a
delivery the producer reported failed although the broker had it.

References
----------
[^1]: quix-streams, ``quixstreams/checkpointing/checkpoint.py``: flush, produce, commit, persist.
[^2]: faust-streaming, ``faust/transport/consumer.py``: how acknowledged offsets are committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.workers.checkpoint import (
    CheckpointFenced,
    CheckpointRefused,
    Claim,
    PartitionCheckpoints,
)
from streams.workers.deadletters import DEAD_LETTER_PARTITION, ReadDeadLetters, Recall
from streams.workers.invariants import InvariantViolated
from streams.workers.outbox import Outbox

__all__ = [
    "ConsumerControl",
    "InvariantViolated",
    "LedgerEvent",
    "PartitionLedger",
    "PartitionState",
    "Snapshotting",
]

log = logging.getLogger("driftline.trainer")

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0


class Message(Protocol):
    @property
    def tp(self) -> Any: ...

    @property
    def offset(self) -> int: ...


class LedgerEvent(Protocol):
    """What the ledger needs of a faust event: where it comes from, and a way to acknowledge it."""

    @property
    def message(self) -> Message: ...

    def ack(self) -> bool: ...


class Snapshotting(Protocol):
    """A model whose whole state is bytes (:class:`trainers.trainer.ModelTrainer`)."""

    def snapshot(self) -> bytes: ...


class ConsumerControl(Protocol):
    """The consumer's flow control, as the ledger drives it."""

    def pause(self, tps: Iterable[Any]) -> None: ...

    def give_up(self, tp: Any) -> None:
        """Let the group reassign ``tp`` (this worker lost it to a fence)."""


Restore = Callable[[Any, Claim], Awaitable[dict[str, Snapshotting]]]
"""Rebuilds a claimed partition's models; raises CheckpointRefused when it must not."""


@dataclass
class PartitionState:
    """What a worker holds for one partition it owns."""

    epoch: int
    cursor: int
    models: dict[str, Any]
    digests: dict[str, str]
    saved_cursor: int
    sources: dict[str, int] = field(default_factory=dict)
    """The last joined record learned per scorer partition: replays of older ones are dropped."""
    pending: list[LedgerEvent] = field(default_factory=list)
    """The admitted records, acknowledged at the next commit."""
    pending_events: int = 0
    """The events those records hold (a batch record holds several)."""
    dirty: set[str] = field(default_factory=set)
    recall: Recall | None = None
    """What the claim's recall read; its ``keys`` shrink as the cursor passes them."""


class PartitionLedger:
    """Per-partition claim, skip, advance, checkpoint and release (see the module docstring).

    Parameters
    ----------
    checkpoints
        Where partitions are claimed and their checkpoints saved.
    outbox
        What must be delivered before a checkpoint.
    restore
        Rebuilds the models of a claimed partition from its snapshots.
    consumer
        Pauses and gives up partitions.
    checkpoint_every, checkpoint_interval
        A checkpoint is due after this many events or seconds, whichever comes first.
    max_unacked
        Events held unacknowledged before consumption pauses.
    redis_errors
        The exceptions that mean "Redis is away, try again later".
    dead_letter_topic, read_dead_letters
        Where dead letters go, and how the recall reads what the topic holds.
    kafka_errors
        The exceptions of ``read_dead_letters`` that mean "Kafka is away, try again later".
    clock, sleep
        Injected for tests.
    on_replayed
        Called for each event skipped because the restored state already holds it.
    on_checkpoint
        Called after each checkpoint with its duration in seconds and whether it was saved.
    """

    def __init__(
        self,
        checkpoints: PartitionCheckpoints,
        *,
        outbox: Outbox,
        restore: Restore,
        consumer: ConsumerControl,
        checkpoint_every: int,
        checkpoint_interval: float,
        max_unacked: int,
        redis_errors: tuple[type[Exception], ...],
        dead_letter_topic: str,
        read_dead_letters: ReadDeadLetters,
        kafka_errors: tuple[type[Exception], ...],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_replayed: Callable[[], None] | None = None,
        on_checkpoint: Callable[[float, bool], None] | None = None,
    ) -> None:
        self.on_replayed = on_replayed
        self.on_checkpoint = on_checkpoint
        self.checkpoints = checkpoints
        self.outbox = outbox
        self.restore = restore
        self.consumer = consumer
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self.max_unacked = max_unacked
        self.redis_errors = redis_errors
        self.dead_letter_topic = dead_letter_topic
        self.read_dead_letters = read_dead_letters
        self.kafka_errors = kafka_errors
        self.clock = clock
        self.sleep = sleep
        self.partitions: dict[Any, PartitionState] = {}
        self.lost: set[Any] = set()
        """Partitions given up to a fence: their events are left alone until reassigned."""
        self.refused: dict[Any, str] = {}
        """Partitions whose checkpoint did not verify, with why: they wait for an operator."""
        self.since_checkpoint = 0
        self._last_checkpoint = clock()
        self._retry_delay = RETRY_FIRST_SECONDS
        self._retry_at = 0.0

    @property
    def unacked(self) -> int:
        """Events admitted and not yet acknowledged, over every partition."""
        return sum(state.pending_events for state in self.partitions.values())

    async def admit(self, event: LedgerEvent) -> PartitionState | None:
        """Steps 1 to 3 for one record: the partition's state to learn it in, or None to skip it."""
        message = event.message
        tp = message.tp
        if tp in self.lost or tp in self.refused:
            return None
        state = self.partitions.get(tp) or await self._claim(tp)
        if state is None:
            return None
        if message.offset <= state.cursor:
            event.ack()  # I1: at or before the restored cursor, already saved
            if self.on_replayed is not None:
                self.on_replayed()
            return None
        state.cursor = message.offset
        state.pending.append(event)
        state.pending_events += 1
        self.since_checkpoint += 1
        return state

    def weigh(self, state: PartitionState, events: int) -> None:
        """Count the record ``admit`` just gave ``state`` as the ``events`` it holds, so that
        ``checkpoint_every`` and ``max_unacked`` count events, whatever the records carry."""
        state.pending_events += events - 1
        self.since_checkpoint += events - 1

    async def _claim(self, tp: Any) -> PartitionState | None:
        while True:
            try:
                claim = await self.checkpoints.claim(tp.topic, tp.partition)
                models = await self.restore(tp, claim)
                recall = await self._recall(tp, claim)
                break
            except CheckpointFenced:
                # Claimed again by another worker between our claim and its first save.
                self.lost.add(tp)
                self.consumer.give_up(tp)
                return None
            except CheckpointRefused as error:
                self.refused[tp] = str(error)
                self.consumer.pause([tp])
                log.error(
                    "%s[%d] paused, its checkpoint is refused: %s. It waits for an operator: "
                    "restore the checkpoint, or delete its Redis keys to start the partition "
                    "from scratch, then restart the worker",
                    tp.topic,
                    tp.partition,
                    error,
                )
                return None
            except (*self.redis_errors, *self.kafka_errors) as error:
                # Without its checkpoint, or without knowing which dead letters the topic holds,
                # a partition cannot be trained: wait for Redis and Kafka.
                log.error(
                    "cannot claim %s[%d], Redis or Kafka unavailable: %s",
                    tp.topic,
                    tp.partition,
                    error,
                )
                await self.sleep(self.backoff())
        log.info(
            "claimed %s[%d] (epoch %d): resuming after offset %d with models %s; %d dead letters "
            "of the events to replay are published already",
            tp.topic,
            tp.partition,
            claim.epoch,
            claim.cursor,
            sorted(models),
            len(recall.keys),
        )
        state = PartitionState(
            epoch=claim.epoch,
            cursor=claim.cursor,
            models=models,
            digests=claim.digests,
            saved_cursor=claim.cursor,
            sources=dict(claim.sources),
            recall=recall,
        )
        self.partitions[tp] = state
        return state

    async def _recall(self, tp: Any, claim: Claim) -> Recall:
        """Step 1's recall: the dead letters of events past the claimed cursor the topic holds;
        a checkpoint without a mark is saved with one at once."""
        recall = await self.read_dead_letters(
            tp.topic, tp.partition, claim.cursor, claim.dead_letters
        )
        if claim.dead_letters is None:
            await self.checkpoints.save(
                tp.topic,
                tp.partition,
                epoch=claim.epoch,
                cursor=claim.cursor,
                snapshots={},
                digests=claim.digests,
                sources=claim.sources,
                dead_letters=recall.end,
            )
        return recall

    async def dead_letter(self, state: PartitionState, key: bytes, value: bytes) -> bool:
        """Step 4's dead letter (key, value) of an event of ``state``'s partition: sent through
        the outbox, unless the recall found it in the topic (I7). True when sent."""
        if state.recall is None:
            raise InvariantViolated("I7", f"dead letter {key!r} before its partition's recall")
        if key in state.recall.keys:
            log.debug("dead letter %r is published already: not sent again", key)
            return False
        await self.outbox.send(self.dead_letter_topic, key, value)
        return True

    def checkpoint_due(self) -> bool:
        now = self.clock()
        return now >= self._retry_at and (
            self.since_checkpoint >= self.checkpoint_every
            or now - self._last_checkpoint >= self.checkpoint_interval
        )

    async def checkpoint_if_due(self) -> None:
        if self.checkpoint_due():
            await self.checkpoint()

    async def checkpoint(self) -> bool:
        """Step 5: flush, persist, commit. True when every owned partition is saved."""
        started = time.perf_counter()
        saved = await self._checkpoint()
        if self.on_checkpoint is not None:
            self.on_checkpoint(time.perf_counter() - started, saved)
        return saved

    async def _checkpoint(self) -> bool:
        if not await self.outbox.flush():
            self._retry_later()
            return False
        for tp, state in list(self.partitions.items()):
            if not state.pending and not state.dirty:
                continue
            try:
                await self._persist(tp, state)
            except CheckpointFenced:
                self._give_up(tp)
                continue
            except self.redis_errors as error:
                log.error(
                    "checkpoint of %s[%d] deferred, Redis unavailable: %s",
                    tp.topic,
                    tp.partition,
                    error,
                )
                self._retry_later()
                return False
            self._commit(state)
        self.since_checkpoint = 0
        self._last_checkpoint = self.clock()
        self._retry_delay = RETRY_FIRST_SECONDS
        self._retry_at = 0.0
        return True

    async def _persist(self, tp: Any, state: PartitionState) -> None:
        if state.models.keys() & self.outbox.waiting_models():
            raise InvariantViolated("I4", f"{tp} has a promotion waiting for Redis")
        if self.outbox.undelivered:
            raise InvariantViolated("I6", f"{self.outbox.undelivered} dead letters not delivered")
        if state.pending and state.pending[-1].message.offset > state.cursor:
            raise InvariantViolated("I2", f"{tp}: an admitted event is past the cursor")
        mark = self._dead_letter_mark(tp, state)
        state.digests = await self.checkpoints.save(
            tp.topic,
            tp.partition,
            epoch=state.epoch,
            cursor=state.cursor,
            snapshots={model: state.models[model].snapshot() for model in state.dirty},
            digests=state.digests,
            sources=state.sources,
            dead_letters=mark,
        )
        state.saved_cursor = state.cursor
        state.dirty.clear()

    def _dead_letter_mark(self, tp: Any, state: PartitionState) -> int:
        """Step 5b's dead-letter mark: at or before every dead letter of an event past the
        cursor (I7), as high as that allows, so that a recall reads only what came since."""
        if state.recall is None:
            raise InvariantViolated("I7", f"{tp} is saved without a recall")
        recalled = state.recall.keys
        for key in [key for key, (source, _) in recalled.items() if source <= state.cursor]:
            del recalled[key]
        sent = self.outbox.acknowledged_end(self.dead_letter_topic, DEAD_LETTER_PARTITION)
        return min((offset for _, offset in recalled.values()), default=max(state.recall.end, sent))

    def _commit(self, state: PartitionState) -> None:
        for event in state.pending:
            if event.message.offset > state.saved_cursor:
                raise InvariantViolated("I1", f"ack of offset {event.message.offset} not saved")
            event.ack()
        state.pending.clear()
        state.pending_events = 0

    def _give_up(self, tp: Any) -> None:
        state = self.partitions.pop(tp)
        self.outbox.drop(state.models)
        self.lost.add(tp)
        log.warning(
            "%s[%d] was claimed by another worker; giving it up so the group reassigns it",
            tp.topic,
            tp.partition,
        )
        self.consumer.give_up(tp)

    async def release(self, revoked: Iterable[Any]) -> None:
        """Step 6: checkpoint, then forget ``revoked`` (their waiting promotions too: the new
        owner replays their events and issues them again)."""
        await self.checkpoint()
        for tp in revoked:
            state = self.partitions.pop(tp, None)
            if state is not None:
                self.outbox.drop(state.models)
            self.refused.pop(tp, None)

    def assigned(self, tps: Iterable[Any]) -> None:
        """Partitions (re)assigned by the group may be claimed again."""
        self.lost.difference_update(tps)

    async def make_room(self) -> None:
        """Backpressure: while too many events wait for a checkpoint, hold the agent and retry it.

        The agent takes no event meanwhile, so faust's stream buffer fills and faust stops
        fetching (its own flow control). Not faust's ``pause_partitions``: it drops the records
        of a fetched batch that it has not handed out yet, and a cursor that later passes them
        would lose them for good.
        """
        if self.unacked < self.max_unacked:
            return
        log.warning(
            "%d events wait for a checkpoint (limit %d): consumption paused until Redis is back",
            self.unacked,
            self.max_unacked,
        )
        while self.unacked >= self.max_unacked:
            await self.sleep(max(self._retry_at - self.clock(), RETRY_FIRST_SECONDS))
            await self.checkpoint()
        log.info("checkpoint saved: consumption resumed")

    def backoff(self) -> float:
        """The next wait before retrying Redis: 0.5 s, doubling to 30 s until a success."""
        delay = self._retry_delay
        self._retry_delay = min(2 * self._retry_delay, RETRY_MAX_SECONDS)
        return delay

    def _retry_later(self) -> None:
        self._retry_at = self.clock() + self.backoff()
