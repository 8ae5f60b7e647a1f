"""The scorer's join of late outcomes to the predictions it served, exactly once, in Redis.

A model's unlabeled events and its outcomes share a partition number (both are keyed by the
model, and the two topics have as many partitions), so one scorer owns both halves of a model's
join. Per partition ``p`` it keeps, in Redis:

- each served prediction (features, version, arm, prediction, probabilities, ts) under its
  ``event_id`` until its outcome arrives or the model's ``label_horizon`` passes, and each
  outcome that arrived first until its event is scored or the horizon passes; an expiry index
  (a sorted set by deadline) lets a sweeper count the predictions that expire and dead-letter
  the outcomes that never matched (``no_prediction``);
- the offset of the last message handled on each of the two topics (the cursors);
- an **outbox**: for each message that produced output, a numbered entry (``seq``) with the
  records to publish (predictions, the labeled events its joins make, dead letters) and the joins
  it made (for the live metrics);
- a signed snapshot of the live metrics (:class:`trainers.live.LiveBoard` per model) covering
  the outbox up to some ``seq``.

A message is one outcome, or one record of unlabeled events: a single event or a batch of one
model's events (:func:`streams.contract.decode_unlabeled_record`), whose refused events are
dead-lettered alone and whose others are committed together. Each message is handled in these
steps:

1. **claim** (the first message of a partition): bump its epoch (fencing out a previous owner),
   restore the live boards from their snapshot and replay the joins of the outbox entries after
   it (deciding again what the guardrail decided: see :mod:`streams.workers.scorer`, I10), then
   **recall**: read the recalled topics (``dlq`` and ``predictions``) from the partition's
   **mark** to their ends (:func:`streams.workers.deadletters.read_since`, retried until Kafka
   answers), and publish every record of the entries still in the outbox that they do not hold
   (it may not have reached the broker); one they hold is delivered, at the offset found. A
   partition without a mark (new, or an outbox written before marks existed) reads nothing, so
   that a read is never unbounded: its entries are all published again, this once, and a mark
   at the topics' ends now is saved at once, so that a second crash finds those copies;
2. **skip** a message at or before its topic's cursor: its effects are already in Redis;
3. **commit**: in one fenced Lua script, write what the message changes (store or join each
   prediction or outcome), its outbox entry, and the cursor. That depends on what its events
   meet (the other half of each pair, or a join already made), which the commit assumes and its
   script checks: a record of events assumes they meet nothing (events mostly come before their
   outcomes); an outcome, that it meets the prediction this owner committed, when it still holds
   it in memory (the newest :data:`PENDING_CACHE`). When the script finds otherwise, nothing is
   written, and the message is committed again after reading what its events meet;
4. **publish**: apply its joins to the live boards and hand its outbox entry's records to the
   producer, in order, without waiting for the broker's acknowledgements (step 5 reads them),
   unless a delivery of the partition failed: then they are held back (I9); then
   **acknowledge** the message to faust, which commits its offset later;
5. **checkpoint** (every ``checkpoint_interval``):

   a. **send again**, in order, every record held back or whose delivery failed after the
      producer's retries, until the producer refuses one (the rest waits for the next
      checkpoint); its entry, with every later one, stays in the outbox until acknowledged;
   b. **snapshot**: save the boards' snapshot covering every ``seq`` so far;
   c. **trim and mark**: in one fenced script, trim the outbox entries both published (every
      record acknowledged by the broker) and covered, and save the mark: per partition of a
      recalled topic, the lowest offset where a record of an entry left landed, or else one past
      the last record the broker acknowledged to this worker there (at least its end at the
      claim): the records this worker hands over from now on land after it.

Invariants:

- **I8** a record of a recalled topic is published once: every record of an entry left in the
  outbox that the broker has is at or past the mark saved with that outbox (aiokafka sends one
  batch per partition at a time, so a record acknowledged was handed over before every record of
  that partition still unacknowledged), so the recall finds it; one it finds is not sent again;
- **I9** the records of a partition reach each topic partition in the order of their entries:
  a record the producer refuses (no metadata in time, a full buffer) takes no sequence number,
  so a later one could be acknowledged before it is sent again, and the trainer's ``seq`` filter
  would then drop its label; hence nothing is handed over behind a failed delivery until it is
  sent again. A delivery that fails after it was drained cannot be passed: the idempotent
  producer numbered it, and as aiokafka 0.14 reads, it numbers no batch again, so the broker
  refuses every later batch of that partition (``OutOfOrderSequenceNumber``): nothing more is
  delivered there until the worker restarts (the re-sends log it; the outbox keeps every
  record).

So every pair is joined exactly once in Redis and in the live metrics, and each prediction and
dead letter is published once; the labeled records a join publishes carry
``{"join": {"source": "<group>/<p>", "seq": n}}``, with ``n`` numbered as event positions are
(:func:`streams.contract.event_position` of the entry's ``seq`` and the join's index in the
entry), so that the numbers increase, by which the trainer drops a record it has already learned
(a republished entry: labeled records are not recalled). A prediction or dead letter can still
come twice when the producer reported a delivery failed although the broker had it, when the
topic holds it at an offset the producer did not report (a duplicate's acknowledgement), in a
partition a recalled topic gained since the mark, or when the worker's principal may not read a
recalled topic (the recall then finds nothing, with a warning); never is one lost.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import logging
import pickle
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from streams.contract import (
    InvalidEvent,
    Outcome,
    ReasonCode,
    UnlabeledEvent,
    dead_letter_record,
    event_position,
)
from streams.workers.checkpoint import CheckpointFenced, RedisCheckpointStore, checkpoint_keys
from streams.workers.deadletters import ReadSince, Tail
from streams.workers.retry import until_done
from trainers.guardrail import GuardDecision
from trainers.live import LiveBoard
from trainers.spec import ModelSpec

__all__ = ["Joiner", "Served", "arm_of"]

log = logging.getLogger("driftline.scorer")

BOARDS = "boards"
# Redis keeps a pending prediction or outcome this much longer than its horizon, so that the
# sweeper, not Redis, decides when it expired (and counts or dead-letters it).
SWEEP_GRACE_MS = 10 * 60 * 1000
SWEEP_BATCH = 1000
PENDING_CACHE = 10_000
"""Pending predictions a partition's owner keeps in memory too, the newest (~600 bytes each for
SEA's three features): an outcome that finds its prediction there is joined without reading it
from Redis first, which pays when outcomes come seconds after their events."""

# KEYS: the partition's epoch key. ARGV: the epoch it was claimed with, a JSON array of Redis
# commands (each an array of strings), and JSON arrays of the keys the commands assume absent and
# present. One script: all of a message's effects, or none. Returns 1 when written, 0 when
# fenced, and 2 when a key is not as assumed.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
for _, key in ipairs(cjson.decode(ARGV[3])) do
  if redis.call('EXISTS', key) == 1 then
    return 2
  end
end
for _, key in ipairs(cjson.decode(ARGV[4])) do
  if redis.call('EXISTS', key) == 0 then
    return 2
  end
end
for _, command in ipairs(cjson.decode(ARGV[2])) do
  redis.call(unpack(command))
end
return 1
"""
_WRITTEN, _MET = 1, 2


class _Met(Exception):
    """A key a commit assumed absent exists, or one it assumed present does not: nothing was
    written."""


def arm_of(event_id: str, fraction: float) -> str:
    """``canary`` for a ``fraction`` of event ids (always the same ones), else ``stable``.

    >>> sum(arm_of(f"e-{i}", 0.1) == "canary" for i in range(100_000)) / 100_000
    0.10151
    """
    if fraction <= 0.0:
        return "stable"
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return "canary" if int.from_bytes(digest, "big") < fraction * 2**64 else "stable"


@dataclass(frozen=True)
class Served:
    """What the scorer served for one event: one prediction per arm that scored it."""

    event: UnlabeledEvent
    predictions: list[dict[str, Any]]
    """``{"version", "arm", "prediction", "probabilities", "serving"}``, the first the one served:
    ``probabilities`` as ``[class, p]`` pairs, ``serving`` what served the model then
    (``stable``, ``trial``, ``trial_arm``, ``reference``), for the live boards."""


TopicPartition = tuple[str, int]


def _failed(delivery: asyncio.Future[Any]) -> bool:
    return delivery.done() and (delivery.cancelled() or delivery.exception() is not None)


def _landed(delivery: asyncio.Future[Any] | None) -> tuple[TopicPartition, int] | None:
    """Where an acknowledged record landed, ``((topic, partition), offset)``; None while it is
    not acknowledged, or when the producer did not say (a duplicate's acknowledgement)."""
    if delivery is None or not delivery.done() or _failed(delivery):
        return None
    landed = delivery.result()
    offset = getattr(landed, "offset", None)
    if not isinstance(offset, int) or offset < 0:
        return None
    return (landed.topic, landed.partition), offset


@dataclass(frozen=True)
class _Recalled:
    """A record of a replayed outbox entry that the topic already holds: delivered, not sent."""

    topic: str
    partition: int
    offset: int


@dataclass
class _InFlight:
    """An outbox entry handed to the producer: its ``seq``, its records, their deliveries
    (None: held back, not handed over yet)."""

    seq: int
    records: list[tuple[str, bytes, bytes]]
    deliveries: list[asyncio.Future[Any] | None]

    def unsent(self) -> list[int]:
        """The indexes of its records to hand over (again): held back, or whose delivery failed
        (after the producer's retries)."""
        return [
            index
            for index, delivery in enumerate(self.deliveries)
            if delivery is None or _failed(delivery)
        ]

    def delivered(self) -> bool:
        """Whether the broker acknowledged every one of its records."""
        return all(d is not None and d.done() and not _failed(d) for d in self.deliveries)


@dataclass
class _Partition:
    epoch: int
    cursors: dict[str, int]
    seq: int
    covered: int
    boards: dict[str, LiveBoard]
    served: collections.Counter[str]
    counts: collections.Counter[str]
    outbox_first: int
    """The ``seq`` of the oldest entry still in the Redis outbox (``seq + 1`` when empty)."""
    in_flight: collections.deque[_InFlight] = field(default_factory=collections.deque)
    """The outbox entries handed to the producer, in ``seq`` order."""
    holding: bool = False
    """A record's delivery failed: the records after it are held back (step 4) until the next
    checkpoint sends it again (step 5a), so that they follow it as they did (see I9)."""
    claim_ends: dict[TopicPartition, int] = field(default_factory=dict)
    """The end offsets of the recalled topics' partitions at the claim: whatever this owner
    publishes lands after them."""
    mark: dict[TopicPartition, int] | None = None
    """The mark in Redis (step 5c)."""
    published: int = 0
    pending: collections.OrderedDict[tuple[str, str], bytes] = field(
        default_factory=collections.OrderedDict
    )
    """The pending predictions this owner committed, per (model, event id), as stored in Redis,
    oldest first, at most :data:`PENDING_CACHE`."""


@dataclass
class _Changes:
    """What one commit writes: Redis commands, tallies, and its outbox entry's records."""

    model: str | None = None
    """The model whose live board the entry's joins go to."""
    commands: list[list[str]] = field(default_factory=list)
    publish: list[tuple[str, str, bytes]] = field(default_factory=list)
    joined: list[tuple[UnlabeledEvent, Any]] = field(default_factory=list)
    """Events joined to their labels: their labeled records are numbered at commit."""
    joins: list[dict[str, Any]] = field(default_factory=list)
    served: collections.Counter[str] = field(default_factory=collections.Counter)
    """Predictions served, per ``model|version|arm``."""
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    """Expired predictions and unmatched outcomes, per ``expired|model`` or ``unmatched|model``."""
    kept: dict[tuple[str, str], bytes] = field(default_factory=dict)
    """Pending predictions written, per (model, event id)."""
    dropped: list[tuple[str, str]] = field(default_factory=list)
    """Pending predictions deleted (joined or expired)."""

    def join(self, event: UnlabeledEvent, label: Any, predictions: list[dict[str, Any]]) -> None:
        """Join ``event``'s ``predictions`` to its ``label``."""
        self.joins += [{**prediction, "label": label} for prediction in predictions]
        self.joined.append((event, label))


class Joiner:
    """The scorer's exactly-once join and live metrics (see the module docstring).

    Parameters
    ----------
    client
        An asyncio Redis client.
    checkpoints
        Signs and fences the snapshots of the live boards (the scorer group's checkpoints).
    specs
        The configured models.
    topics
        ``labeled``, ``unlabeled``, ``outcomes``, ``predictions``, ``dlq`` topic names.
    send
        Hands a record to the producer; returns its delivery (done once the broker has it).
    prefix, group
        Namespace of the Redis keys: driftline's prefix and the scorer's consumer group.
    on_decision
        Told of each rollout, rollback or alert the live boards decide.
    recall
        Reads the recalled topics (``dlq`` and ``predictions``) past a mark, for the claim's
        recall (step 1); None recalls nothing (every replayed record is published again).
    backlog
        Whether a partition's input topics hold messages not handled yet: nothing expires while
        they do, so that a scorer catching up after an outage joins what its backlog still
        holds instead of expiring it.
    clock
        Wall-clock seconds (the horizon runs in real time).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        checkpoints: RedisCheckpointStore,
        specs: dict[str, ModelSpec],
        topics: Any,
        send: Callable[[str, bytes, bytes], Awaitable[asyncio.Future[Any]]],
        prefix: str,
        group: str,
        on_decision: Callable[[str, GuardDecision], Awaitable[None]],
        recall: ReadSince | None,
        backlog: Callable[[int, dict[str, int]], bool] = lambda partition, cursors: False,
        clock: Callable[[], float] = time.time,
        retry_first: float = 0.5,
    ) -> None:
        self.client = client
        self.checkpoints = checkpoints
        self.specs = specs
        self.topics = topics
        self.send = send
        self.prefix = f"{prefix}join:{group}"
        self.group = group
        self.on_decision = on_decision
        self.recall = recall
        self.recalled = frozenset({topics.dlq, topics.predictions})
        """The topics whose records a replay does not publish again when they hold them."""
        self.backlog = backlog
        self.clock = clock
        self.retry_first = retry_first
        self.partitions: dict[int, _Partition] = {}
        self._acknowledged: dict[TopicPartition, int] = {}
        """Per partition of a recalled topic, one past the highest offset the broker acknowledged
        to this worker: whatever it hands over later lands after it."""
        self.lost: set[int] = set()
        self._commit = client.register_script(_COMMIT)
        self._epoch_namespace = f"{prefix}checkpoint:{group}"

    # -- keys ---------------------------------------------------------------------------------

    def _key(self, partition: int, *parts: str) -> str:
        return ":".join((self.prefix, str(partition), *parts))

    def _item_key(self, partition: int, kind: str, model: str, event_id: str) -> str:
        # The model's length keeps "a:b" + "c" apart from "a" + "b:c".
        return self._key(partition, kind, str(len(model)), model, event_id)

    def _epoch_key(self, partition: int) -> str:
        return checkpoint_keys(self._epoch_namespace, self.topics.unlabeled, partition)[0]

    # -- claim --------------------------------------------------------------------------------

    async def _claim(self, partition: int) -> _Partition | None:
        claim = await self.checkpoints.claim(self.topics.unlabeled, partition)
        pipe = self.client.pipeline(transaction=False)
        for topic in (self.topics.unlabeled, self.topics.outcomes):
            pipe.get(self._key(partition, "cursor", topic))
        pipe.get(self._key(partition, "seq"))
        pipe.lrange(self._key(partition, "outbox"), 0, -1)
        pipe.hgetall(self._key(partition, "served"))
        pipe.hgetall(self._key(partition, "counts"))
        pipe.get(self._key(partition, "mark"))
        cursor_u, cursor_o, seq, outbox, served, counts, mark = await pipe.execute()
        blob = claim.snapshots.get(BOARDS)
        boards: dict[str, LiveBoard] = pickle.loads(blob) if blob else {}
        entries = [orjson.loads(raw) for raw in outbox]
        state = _Partition(
            epoch=claim.epoch,
            cursors={
                self.topics.unlabeled: int(cursor_u or -1),
                self.topics.outcomes: int(cursor_o or -1),
            },
            seq=int(seq or 0),
            covered=max(claim.cursor, 0),
            boards=boards,
            served=collections.Counter({k.decode(): int(v) for k, v in served.items()}),
            counts=collections.Counter({k.decode(): int(v) for k, v in counts.items()}),
            outbox_first=entries[0]["seq"] if entries else int(seq or 0) + 1,
            mark=_parse_mark(mark),
        )
        tail = await self._recall(partition, state)
        if tail is None:
            return None
        self.partitions[partition] = state
        held = _held(tail, self.recalled)
        recalled = sum(len(offsets) for offsets in held.values())
        for entry in entries:
            if entry["seq"] > state.covered:
                await self._apply_joins(state, entry, decide=True)
            await self._publish(state, entry, held)
        log.info(
            "claimed joins of partition %d (epoch %d): %d outbox entries replayed, %d of their "
            "records not sent again (the topics hold them)",
            partition,
            claim.epoch,
            len(entries),
            recalled - sum(len(offsets) for offsets in held.values()),
        )
        return state

    async def _recall(self, partition: int, state: _Partition) -> Tail | None:
        """Step 1's recall: what the recalled topics hold past the mark (retried until Kafka
        answers). Without a mark, nothing is read and the claim saves one at once (None when
        fenced meanwhile)."""
        if self.recall is None:
            return Tail(ends={})
        read = self.recall
        starts = state.mark or {}
        tail = await until_done(
            lambda: read(starts),
            what=f"reading the outputs of partition {partition} past its mark",
            log=log,
            first=self.retry_first,
        )
        state.claim_ends = {where: end for where, end in tail.ends.items()}
        # Without a mark (an outbox written before marks existed, or none yet), its records may
        # be anywhere in the topics: they are all published again, this once, and land after
        # the topics' ends now, so a mark there bounds every later recall.
        if state.mark is None and not await self._save_mark(partition, state, state.claim_ends):
            return None
        return tail

    async def owned(self, partition: int) -> _Partition | None:
        if partition in self.lost:
            return None
        return self.partitions.get(partition) or await self._claim(partition)

    def release(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)

    def assigned(self, partitions: set[int]) -> None:
        self.lost -= partitions

    # -- the two inputs -----------------------------------------------------------------------

    def skips(self, state: _Partition, topic: str, offset: int) -> bool:
        """Whether a message is at or before its topic's cursor (already handled)."""
        return offset <= state.cursors[topic]

    async def served(
        self,
        state: _Partition,
        partition: int,
        offset: int,
        served: list[Served],
        dead_letters: list[tuple[bytes, bytes]],
    ) -> bool:
        """Commit one record of unlabeled events: the predictions of its ``served`` events (all of
        one model), the joins of those whose outcome waits, and its refused events'
        ``dead_letters`` (key, value)."""
        model = served[0].event.model if served else None
        if any(each.event.model != model for each in served):
            raise ValueError("the events of one record are of one model (its key)")
        spec = self.specs[model] if model is not None else None
        pairs = [(e.event.model, e.event.event_id) for e in served] if spec and spec.join else []
        cursor = (self.topics.unlabeled, offset)
        # Events mostly come before their outcomes: the first commit assumes that none meets its
        # outcome or a join already made, and its script checks it, which saves a round trip.
        unmet: list[tuple[bool, bytes | None]] = [(False, None)] * len(pairs)
        try:
            return await self._commit_changes(
                state,
                partition,
                self._scored(partition, spec, served, dead_letters, unmet),
                cursor=cursor,
                absent=self._met_keys(partition, "out", pairs),
            )
        except _Met:
            met = await self._lookup(partition, "out", pairs)
            return await self._commit_changes(
                state,
                partition,
                self._scored(partition, spec, served, dead_letters, met),
                cursor=cursor,
            )

    def _scored(
        self,
        partition: int,
        spec: ModelSpec | None,
        served: list[Served],
        dead_letters: list[tuple[bytes, bytes]],
        met: list[tuple[bool, bytes | None]],
    ) -> _Changes:
        """What a record of unlabeled events changes, given what each of its events meets (if its
        model joins): whether it was joined already, and its waiting outcome."""
        changes = _Changes(spec.name if spec else None)
        changes.publish += [(self.topics.dlq, key.decode(), value) for key, value in dead_letters]
        for each in served:
            changes.publish += [
                (self.topics.predictions, each.event.model, _prediction_value(each.event, p))
                for p in each.predictions
            ]
            changes.served.update(_served_field(each.event.model, p) for p in each.predictions)
        if spec is None or not spec.join:
            return changes
        joined: set[str] = set()
        for each, (done, waiting) in zip(served, met, strict=True):
            event = each.event
            # An event id seen twice in one record: its second event finds it joined by the first.
            if done or event.event_id in joined:
                continue
            if waiting is not None:
                changes.join(event, orjson.loads(waiting)["label"], each.predictions)
                changes.commands += self._forget(
                    partition, "out", event.model, event.event_id, spec
                )
                joined.add(event.event_id)
            else:
                pending = {
                    "features": event.features,
                    "ts": event.ts,
                    "predictions": each.predictions,
                }
                kept = orjson.dumps(pending, option=orjson.OPT_NON_STR_KEYS)
                changes.commands += self._remember(
                    partition, "pred", event.model, event.event_id, kept, spec
                )
                changes.kept[(event.model, event.event_id)] = kept
        return changes

    async def outcome(
        self, state: _Partition, partition: int, offset: int, outcome: Outcome, raw: bytes
    ) -> bool:
        """Commit one outcome: join it to its prediction, or keep it until its event comes."""
        spec = self.specs[outcome.model]
        cursor = (self.topics.outcomes, offset)
        scored = [(outcome.model, outcome.event_id)]
        kept = state.pending.get(scored[0])
        if kept is not None:
            # This owner committed the prediction: joined without reading it first, if the
            # script finds it still there (not expired) and the pair not joined.
            done_key, pending_key = self._met_keys(partition, "pred", scored)
            try:
                return await self._commit_changes(
                    state,
                    partition,
                    self._outcome(partition, spec, offset, outcome, raw, False, kept),
                    cursor=cursor,
                    absent=[done_key],
                    present=[pending_key],
                )
            except _Met:
                state.pending.pop(scored[0], None)  # gone from Redis (expired), or joined
        [(done, pending)] = await self._lookup(partition, "pred", scored)
        return await self._commit_changes(
            state,
            partition,
            self._outcome(partition, spec, offset, outcome, raw, done, pending),
            cursor=cursor,
        )

    def _outcome(
        self,
        partition: int,
        spec: ModelSpec,
        offset: int,
        outcome: Outcome,
        raw: bytes,
        done: bool,
        pending_raw: bytes | None,
    ) -> _Changes:
        """What an outcome changes, given whether its event was joined already and its pending
        prediction."""
        changes = _Changes(outcome.model)
        if done:
            return changes  # a second outcome for a joined event: the first one counted
        if pending_raw is not None:
            pending = orjson.loads(pending_raw)
            event = UnlabeledEvent(
                outcome.event_id, outcome.model, pending["ts"], pending["features"]
            )
            changes.join(event, outcome.label, pending["predictions"])
            changes.commands += self._forget(
                partition, "pred", outcome.model, outcome.event_id, spec
            )
            changes.dropped.append((outcome.model, outcome.event_id))
        else:
            waiting = {
                "label": outcome.label,
                "raw": base64.b64encode(raw).decode(),
                "offset": offset,
            }
            changes.commands += self._remember(
                partition, "out", outcome.model, outcome.event_id, orjson.dumps(waiting), spec
            )
        return changes

    async def dead_letter(
        self,
        state: _Partition,
        partition: int,
        topic: str,
        offset: int,
        dead_letter: tuple[bytes, bytes],
    ) -> bool:
        """Commit a refused message: its dead letter (key, value) goes out through the outbox."""
        key, value = dead_letter
        changes = _Changes(publish=[(self.topics.dlq, key.decode(), value)])
        return await self._commit_changes(state, partition, changes, cursor=(topic, offset))

    async def _lookup(
        self, partition: int, kind: str, events: list[tuple[str, str]]
    ) -> list[tuple[bool, bytes | None]]:
        """For each (model, event id): whether the event was joined already, and its other half
        (``kind``: ``pred`` or ``out``), in one round trip."""
        values = await self._get(self._met_keys(partition, kind, events))
        return [(values[i] is not None, values[i + 1]) for i in range(0, len(values), 2)]

    def _met_keys(self, partition: int, kind: str, events: list[tuple[str, str]]) -> list[str]:
        """The keys :meth:`_lookup` reads: per event, its join's and its other half's."""
        return [
            self._item_key(partition, name, model, event_id)
            for model, event_id in events
            for name in ("done", kind)
        ]

    async def _get(self, keys: list[str]) -> list[bytes | None]:
        """The values of ``keys`` (None for a missing one), in one round trip."""
        return cast(list[bytes | None], await self.client.mget(keys)) if keys else []

    def _labeled(
        self, partition: int, event: UnlabeledEvent, label: Any, number: int
    ) -> tuple[str, str, bytes]:
        value = {
            "event_id": event.event_id,
            "model": event.model,
            "ts": event.ts,
            "features": event.features,
            "label": label,
            # The trainer's duplicate filter.
            "join": {"source": f"{self.group}/{partition}", "seq": number},
        }
        return (self.topics.labeled, event.model, orjson.dumps(value))

    def _remember(
        self,
        partition: int,
        kind: str,
        model: str,
        event_id: str,
        value: bytes,
        spec: ModelSpec,
    ) -> list[list[str]]:
        key = self._item_key(partition, kind, model, event_id)
        horizon_ms = int(spec.label_horizon * 1000)
        deadline = int(self.clock() * 1000) + horizon_ms
        return [
            [
                "SET",
                key,
                value.decode(),
                "PX",
                str(horizon_ms + SWEEP_GRACE_MS),
            ],
            [
                "ZADD",
                self._key(partition, "expiry"),
                str(deadline),
                orjson.dumps([kind, model, event_id]).decode(),
            ],
        ]

    def _forget(
        self, partition: int, kind: str, model: str, event_id: str, spec: ModelSpec
    ) -> list[list[str]]:
        horizon_ms = int(spec.label_horizon * 1000) + SWEEP_GRACE_MS
        return [
            ["DEL", self._item_key(partition, kind, model, event_id)],
            [
                "ZREM",
                self._key(partition, "expiry"),
                orjson.dumps([kind, model, event_id]).decode(),
            ],
            ["SET", self._item_key(partition, "done", model, event_id), "1", "PX", str(horizon_ms)],
        ]

    # -- commit, publish, checkpoint ----------------------------------------------------------

    async def _commit_changes(
        self,
        state: _Partition,
        partition: int,
        changes: _Changes,
        *,
        cursor: tuple[str, int] | None = None,
        absent: list[str] | None = None,
        present: list[str] | None = None,
    ) -> bool:
        """Step 3 (commit ``changes`` and move the ``cursor`` of a message's topic to its offset;
        a sweep moves none), then step 4's publishing. False when fenced; raises :class:`_Met`,
        with nothing written, when a key ``changes`` assume ``absent`` exists or one they assume
        ``present`` does not."""
        commands = [
            *changes.commands,
            *(
                ["HINCRBY", self._key(partition, tally), name, str(count)]
                for tally, counter in (("served", changes.served), ("counts", changes.counts))
                for name, count in counter.items()
            ),
        ]
        entry: dict[str, Any] | None = None
        if changes.publish or changes.joins:
            seq = state.seq + 1
            labeled = [
                self._labeled(partition, event, label, event_position(seq, index))
                for index, (event, label) in enumerate(changes.joined)
            ]
            entry = {
                "seq": seq,
                "model": changes.model,
                "publish": [
                    [topic, key, base64.b64encode(value).decode()]
                    for topic, key, value in (*changes.publish, *labeled)
                ],
                "joins": changes.joins,
            }
            commands += [
                ["RPUSH", self._key(partition, "outbox"), orjson.dumps(entry).decode()],
                ["SET", self._key(partition, "seq"), str(seq)],
            ]
        if cursor is not None:
            commands.append(["SET", self._key(partition, "cursor", cursor[0]), str(cursor[1])])
        status = await self._commit(
            keys=[self._epoch_key(partition)],
            args=[
                state.epoch,
                orjson.dumps(commands).decode(),
                orjson.dumps(absent or []).decode(),
                orjson.dumps(present or []).decode(),
            ],
        )
        if status == _MET:
            raise _Met
        if status != _WRITTEN:
            self._lose(partition)
            return False
        if cursor is not None:
            state.cursors[cursor[0]] = cursor[1]
        state.served.update(changes.served)
        state.counts.update(changes.counts)
        for dropped in changes.dropped:
            state.pending.pop(dropped, None)
        state.pending.update(changes.kept)
        while len(state.pending) > PENDING_CACHE:
            state.pending.popitem(last=False)
        if entry is not None:
            state.seq = int(entry["seq"])
            await self._apply_joins(state, entry, decide=True)
            await self._publish(state, entry)
        return True

    async def _apply_joins(self, state: _Partition, entry: dict[str, Any], *, decide: bool) -> None:
        model = entry.get("model")
        if not entry["joins"] or model not in self.specs:
            return
        board = state.boards.get(model)
        if board is None:
            board = state.boards[model] = LiveBoard(self.specs[model])
        for joined in entry["joins"]:
            serving = joined.get("serving") or {}
            board.serve(
                stable=serving.get("stable", joined["version"]),
                trial=serving.get("trial"),
                trial_arm=serving.get("trial_arm"),
                reference=serving.get("reference"),
            )
            decisions = board.joined(
                version=joined["version"],
                arm=joined["arm"],
                label=joined["label"],
                prediction=joined["prediction"],
                probabilities=_probabilities(joined.get("probabilities")),
            )
            if decide:
                for decision in decisions:
                    await self.on_decision(model, decision)

    async def _publish(
        self,
        state: _Partition,
        entry: dict[str, Any],
        held: dict[tuple[str, bytes, bytes], collections.deque[_Recalled]] | None = None,
    ) -> None:
        """Hand an outbox entry's records to the producer, in order (so that the labeled records
        of joins reach the trainer in ``seq`` order); their deliveries are read at step 5.

        A record the claim's recall found in its topic (``held``, consumed) is not sent: it is
        delivered at the offset found (I8). Behind a failed delivery, records are held back
        (I9)."""
        records = [
            (topic, key.encode(), base64.b64decode(value)) for topic, key, value in entry["publish"]
        ]
        deliveries: list[asyncio.Future[Any] | None] = []
        for record in records:
            found = held.get(_identity(record)) if held else None
            if found:
                delivery = asyncio.get_running_loop().create_future()
                delivery.set_result(found.popleft())
            elif state.holding:
                delivery = None
            else:
                delivery = await self._hand_over(state, record)
            deliveries.append(delivery)
        state.in_flight.append(_InFlight(int(entry["seq"]), records, deliveries))

    async def _hand_over(
        self, state: _Partition, record: tuple[str, bytes, bytes]
    ) -> asyncio.Future[Any]:
        try:
            delivery = await self.send(*record)
        except Exception as error:  # refused by the producer: a failed delivery, sent again
            state.holding = True  # I9: nothing passes it
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(error)
            return failed

        def hold_if_failed(delivery: asyncio.Future[Any]) -> None:
            if _failed(delivery):
                state.holding = True

        delivery.add_done_callback(hold_if_failed)
        return delivery

    async def _send_again(self, partition: int, state: _Partition) -> None:
        """Step 5a: hand over again, in order, every record held back or whose delivery failed,
        until the producer refuses one (the rest stays held, I9)."""
        unsent = [(entry, entry.unsent()) for entry in state.in_flight]
        unsent = [(entry, indexes) for entry, indexes in unsent if indexes]
        if not unsent:
            state.holding = False
            return
        log.error(
            "%d record(s) of partition %d were not delivered, from outbox entry %d on: sent again",
            sum(len(indexes) for _, indexes in unsent),
            partition,
            unsent[0][0].seq,
        )
        state.holding = False
        for entry, indexes in unsent:
            for index in indexes:
                entry.deliveries[index] = await self._hand_over(state, entry.records[index])
                if state.holding:
                    return

    async def checkpoint(self) -> None:
        """Step 5 for every owned partition: send again what failed, snapshot the boards, trim
        the outbox and save the mark."""
        for state in self.partitions.values():
            for entry in state.in_flight:
                for delivery in entry.deliveries:
                    self._acknowledge(delivery)
        for partition, state in list(self.partitions.items()):
            if state.holding or any(entry.unsent() for entry in state.in_flight):
                await self._send_again(partition, state)
            published = state.published
            while state.in_flight and state.in_flight[0].delivered():
                published = state.in_flight.popleft().seq
            state.published = max(published, state.published)
            try:
                await self.checkpoints.save(
                    self.topics.unlabeled,
                    partition,
                    epoch=state.epoch,
                    cursor=state.seq,
                    snapshots={
                        BOARDS: pickle.dumps(state.boards, protocol=pickle.HIGHEST_PROTOCOL)
                    },
                )
            except CheckpointFenced:
                self._lose(partition)
                continue
            state.covered = state.seq
            trim_to = min(state.published, state.covered)
            trim = None
            if trim_to >= state.outbox_first:
                trim = trim_to - state.outbox_first + 1
            mark = self._mark(state)
            if trim is None and mark == state.mark:
                continue
            if await self._save_mark(partition, state, mark, trim=trim) and trim is not None:
                state.outbox_first = trim_to + 1

    def _acknowledge(self, delivery: asyncio.Future[Any] | None) -> None:
        landed = _landed(delivery)
        if landed is not None and landed[0][0] in self.recalled:
            where, offset = landed
            self._acknowledged[where] = max(self._acknowledged.get(where, 0), offset + 1)

    def _mark(self, state: _Partition) -> dict[TopicPartition, int]:
        """Step 5c's mark: per partition of a recalled topic, an offset at or before every
        record of the outbox entries left (I8), as high as that allows: the lowest offset where
        one of them landed, or else one past the last record acknowledged to this worker (at
        least the end at the claim): the records it hands over from now on land after it."""
        mark = {
            where: max(end, self._acknowledged.get(where, 0))
            for where, end in state.claim_ends.items()
        }
        for where, end in self._acknowledged.items():
            mark[where] = max(mark.get(where, 0), end)
        for entry in state.in_flight:
            for delivery in entry.deliveries:
                landed = _landed(delivery)
                if landed is not None and landed[0] in mark:
                    where, offset = landed
                    mark[where] = min(mark[where], offset)
        return mark

    async def _save_mark(
        self,
        partition: int,
        state: _Partition,
        mark: dict[TopicPartition, int],
        *,
        trim: int | None = None,
    ) -> bool:
        """Write ``mark`` and trim the first ``trim`` entries of the outbox in one fenced script
        (the mark is only right for the outbox it was computed with). False when fenced."""
        commands = [
            [
                "SET",
                self._key(partition, "mark"),
                orjson.dumps(
                    [[topic, number, offset] for (topic, number), offset in mark.items()]
                ).decode(),
            ]
        ]
        if trim is not None:
            commands.append(["LTRIM", self._key(partition, "outbox"), str(trim), "-1"])
        status = await self._commit(
            keys=[self._epoch_key(partition)],
            args=[state.epoch, orjson.dumps(commands).decode(), "[]", "[]"],
        )
        if status != _WRITTEN:
            self._lose(partition)
            return False
        state.mark = mark
        return True

    def _lose(self, partition: int) -> None:
        log.warning(
            "joins of partition %d were claimed by another scorer; giving them up", partition
        )
        self.partitions.pop(partition, None)
        self.lost.add(partition)

    # -- expiry -------------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Expire what waited past its model's horizon: count predictions, dead-letter outcomes."""
        now_ms = int(self.clock() * 1000)
        for partition, state in list(self.partitions.items()):
            if self.backlog(partition, state.cursors):
                continue
            expiry = self._key(partition, "expiry")
            members = cast(
                list[bytes],
                await self.client.zrangebyscore(expiry, "-inf", now_ms, start=0, num=SWEEP_BATCH),
            )
            if not members:
                continue
            expired = [orjson.loads(member) for member in members]
            changes = _Changes()
            outcomes = [(model, event_id) for kind, model, event_id in expired if kind == "out"]
            waiting = await self._get(
                [self._item_key(partition, "out", model, event_id) for model, event_id in outcomes]
            )
            for member, (kind, model, event_id) in zip(members, expired, strict=True):
                key = self._item_key(partition, kind, model, event_id)
                changes.commands += [["ZREM", expiry, member.decode()], ["DEL", key]]
                changes.counts[f"{'expired' if kind == 'pred' else 'unmatched'}|{model}"] += 1
                if kind == "pred":
                    changes.dropped.append((model, event_id))
            for (model, event_id), raw in zip(outcomes, waiting, strict=True):
                if raw is None:
                    continue
                outcome = orjson.loads(raw)
                error = InvalidEvent(
                    ReasonCode.NO_PREDICTION,
                    f"no prediction of {model!r} for event {event_id!r} was served within "
                    f"its label horizon ({self.specs[model].label_horizon:g} s)",
                )
                dlq_key, value = dead_letter_record(
                    base64.b64decode(outcome["raw"]),
                    error,
                    topic=self.topics.outcomes,
                    partition=partition,
                    offset=outcome["offset"],
                    key=model.encode(),
                )
                changes.publish.append((self.topics.dlq, dlq_key.decode(), value))
            await self._commit_changes(state, partition, changes)

    # -- reports ------------------------------------------------------------------------------

    async def pending(self) -> int:
        """Predictions and outcomes waiting for their other half, over the owned partitions."""
        total = 0
        for partition in list(self.partitions):
            total += int(await self.client.zcard(self._key(partition, "expiry")))
        return total

    def reports(self) -> list[dict[str, Any]]:
        """One live report per (model, version, arm) this scorer owns, for the metrics topic."""
        reports = []
        for state in self.partitions.values():
            served: collections.Counter[tuple[str, int, str]] = collections.Counter()
            for name, count in state.served.items():
                model, number, arm = name.split("|")
                served[(model, int(number), arm)] += count
            keys = set(served) | {
                (model, version, arm)
                for model, board in state.boards.items()
                for version, arm in board.report()
            }
            for model, version, arm in sorted(keys):
                board = state.boards.get(model)
                live = board.report().get((version, arm)) if board else None
                reports.append(
                    {
                        "kind": "live",
                        "model": model,
                        "version": version,
                        "arm": arm,
                        "served": served[(model, version, arm)],
                        "joined": live["joined"] if live else 0,
                        "metrics": {k: live[k] for k in ("rolling", "cumulative")} if live else {},
                        "expired": state.counts[f"expired|{model}"],
                        "unmatched": state.counts[f"unmatched|{model}"],
                        "ts": self.clock(),
                    }
                )
        return reports


def _served_field(model: str, prediction: dict[str, Any]) -> str:
    return f"{model}|{prediction['version']}|{prediction['arm']}"


def _prediction_value(event: UnlabeledEvent, prediction: dict[str, Any]) -> bytes:
    value: dict[str, Any] = {
        "event_id": event.event_id,
        "model": event.model,
        "version": prediction["version"],
        "arm": prediction["arm"],
        "prediction": prediction["prediction"],
    }
    probabilities = _probabilities(prediction.get("probabilities"))
    if probabilities is not None:
        value["probabilities"] = probabilities
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def _probabilities(pairs: list[list[Any]] | None) -> dict[Any, float] | None:
    # Kept as [class, p] pairs: as JSON object keys, classes such as True or 1 would become text.
    return None if not pairs else {cls: float(p) for cls, p in pairs}


def _parse_mark(raw: bytes | None) -> dict[TopicPartition, int] | None:
    """A partition's mark as Redis holds it (None: no mark, an outbox older than marks)."""
    if raw is None:
        return None
    return {(topic, int(number)): int(offset) for topic, number, offset in orjson.loads(raw)}


def _identity(record: tuple[str, bytes, bytes]) -> tuple[str, bytes, bytes]:
    """What tells a record from another: its topic, key and a digest of its value (a replay
    sends the very bytes its outbox entry holds)."""
    topic, key, value = record
    return topic, key, hashlib.blake2b(value, digest_size=16).digest()


def _held(
    tail: Tail, recalled: frozenset[str]
) -> dict[tuple[str, bytes, bytes], collections.deque[_Recalled]]:
    """Per identity, where the recalled topics hold such records past the mark, in order (two
    equal records, e.g. the predictions of an event sent twice, are two)."""
    held: dict[tuple[str, bytes, bytes], collections.deque[_Recalled]] = {}
    for record in tail.records:
        if record.topic not in recalled:
            continue
        identity = _identity((record.topic, record.key or b"", record.value or b""))
        found = _Recalled(record.topic, record.partition, record.offset)
        held.setdefault(identity, collections.deque()).append(found)
    return held
