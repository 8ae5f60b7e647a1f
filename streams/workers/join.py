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
  records to publish (predictions, the labeled event a join makes, dead letters) and the joins
  it made (for the live metrics);
- a signed snapshot of the live metrics (:class:`trainers.live.LiveBoard` per model) covering
  the outbox up to some ``seq``.

Each message is handled in these steps:

1. **claim** (the first message of a partition): bump its epoch (fencing out a previous owner),
   restore the live boards from their snapshot and replay the joins of the outbox entries after
   it, then publish every entry still in the outbox (it may not have reached the broker);
2. **skip** a message at or before its topic's cursor: its effects are already in Redis;
3. **commit**: in one fenced Lua script, write what the message changes (store or join the
   prediction or outcome), its outbox entry, and the cursor;
4. **acknowledge** the message to faust, which commits its offset later; apply its joins to the
   live boards and publish its outbox entry;
5. **checkpoint** (every ``checkpoint_interval``): save the boards' snapshot covering every
   ``seq`` so far, then trim the outbox entries both published and covered.

After a crash, messages after the cursors are handled again, and entries left in the outbox are
published again. So every pair is joined exactly once in Redis and in the live metrics; the
labeled records a join publishes carry ``{"join": {"source": "<group>/<p>", "seq": n}}``, by
which the trainer drops a record it has already learned (a republished entry), and predictions
are at least once (a consumer that must not see duplicates keeps the last per ``event_id``).
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

from streams.contract import InvalidEvent, Outcome, ReasonCode, UnlabeledEvent, dead_letter_record
from streams.workers.checkpoint import CheckpointFenced, RedisCheckpointStore, checkpoint_keys
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

# KEYS: the partition's epoch key. ARGV: the epoch it was claimed with, then a JSON array of
# Redis commands, each an array of strings. One script: all of a message's effects, or none.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
for _, command in ipairs(cjson.decode(ARGV[2])) do
  redis.call(unpack(command))
end
return 1
"""


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
    in_flight: collections.deque[tuple[int, list[asyncio.Future[None]]]] = field(
        default_factory=collections.deque
    )
    published: int = 0


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
        Produces a record; returns its delivery.
    prefix, group
        Namespace of the Redis keys: driftline's prefix and the scorer's consumer group.
    on_decision
        Told of each rollout, rollback or alert the live boards decide.
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
        send: Callable[[str, bytes, bytes], Awaitable[Awaitable[Any]]],
        prefix: str,
        group: str,
        on_decision: Callable[[str, GuardDecision], Awaitable[None]],
        backlog: Callable[[int, dict[str, int]], bool] = lambda partition, cursors: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.checkpoints = checkpoints
        self.specs = specs
        self.topics = topics
        self.send = send
        self.prefix = f"{prefix}join:{group}"
        self.group = group
        self.on_decision = on_decision
        self.backlog = backlog
        self.clock = clock
        self.partitions: dict[int, _Partition] = {}
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

    async def _claim(self, partition: int) -> _Partition:
        claim = await self.checkpoints.claim(self.topics.unlabeled, partition)
        pipe = self.client.pipeline(transaction=False)
        for topic in (self.topics.unlabeled, self.topics.outcomes):
            pipe.get(self._key(partition, "cursor", topic))
        pipe.get(self._key(partition, "seq"))
        pipe.lrange(self._key(partition, "outbox"), 0, -1)
        pipe.hgetall(self._key(partition, "served"))
        pipe.hgetall(self._key(partition, "counts"))
        cursor_u, cursor_o, seq, outbox, served, counts = await pipe.execute()
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
        )
        self.partitions[partition] = state
        for entry in entries:
            if entry["seq"] > state.covered:
                await self._apply_joins(state, entry, decide=True)
            self._publish(state, entry)
        log.info(
            "claimed joins of partition %d (epoch %d): %d outbox entries replayed",
            partition,
            claim.epoch,
            len(entries),
        )
        return state

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

    async def served(self, state: _Partition, partition: int, offset: int, served: Served) -> bool:
        """Commit the predictions of one unlabeled event (and its join, if its outcome waits)."""
        event = served.event
        publish = [
            (self.topics.predictions, event.model, _prediction_value(event, prediction))
            for prediction in served.predictions
        ]
        commands: list[list[str]] = [
            ["HINCRBY", self._key(partition, "served"), _served_field(event.model, p), "1"]
            for p in served.predictions
        ]
        joins: list[dict[str, Any]] = []
        spec = self.specs[event.model]
        if spec.join:
            done, waiting = await self._lookup(partition, "out", event.model, event.event_id)
            if waiting is not None and not done:
                outcome = orjson.loads(waiting)
                joins = self._joins(served.predictions, outcome["label"])
                publish.append(self._labeled(partition, event, outcome["label"]))
                commands += self._forget(partition, "out", event.model, event.event_id, spec)
            elif not done:
                pending = {
                    "features": event.features,
                    "ts": event.ts,
                    "predictions": served.predictions,
                }
                commands += self._remember(
                    partition, "pred", event.model, event.event_id, pending, spec
                )
        return await self._commit_message(
            state, partition, self.topics.unlabeled, offset, commands, publish, joins, event.model
        )

    async def outcome(
        self, state: _Partition, partition: int, offset: int, outcome: Outcome, raw: bytes
    ) -> bool:
        """Commit one outcome: join it to its prediction, or keep it until its event comes."""
        spec = self.specs[outcome.model]
        commands: list[list[str]] = []
        publish: list[tuple[str, str, bytes]] = []
        joins: list[dict[str, Any]] = []
        done, pending_raw = await self._lookup(partition, "pred", outcome.model, outcome.event_id)
        if done:
            pass  # a second outcome for a joined event: the first one counted
        elif pending_raw is not None:
            pending = orjson.loads(pending_raw)
            joins = self._joins(pending["predictions"], outcome.label)
            event = UnlabeledEvent(
                outcome.event_id, outcome.model, pending["ts"], pending["features"]
            )
            publish.append(self._labeled(partition, event, outcome.label))
            commands += self._forget(partition, "pred", outcome.model, outcome.event_id, spec)
        else:
            waiting = {
                "label": outcome.label,
                "raw": base64.b64encode(raw).decode(),
                "offset": offset,
            }
            commands += self._remember(
                partition, "out", outcome.model, outcome.event_id, waiting, spec
            )
        return await self._commit_message(
            state, partition, self.topics.outcomes, offset, commands, publish, joins, outcome.model
        )

    async def dead_letter(
        self, state: _Partition, partition: int, topic: str, message: Any, error: InvalidEvent
    ) -> bool:
        """Commit a refused message: its dead letter goes out through the outbox."""
        key, value = dead_letter_record(
            message.value or b"",
            error,
            topic=topic,
            partition=partition,
            offset=message.offset,
            key=message.key,
        )
        publish = [(self.topics.dlq, key.decode(), value)]
        return await self._commit_message(
            state, partition, topic, message.offset, [], publish, [], None
        )

    async def _lookup(
        self, partition: int, kind: str, model: str, event_id: str
    ) -> tuple[bool, bytes | None]:
        """Whether the event was joined already, and the other half (``pred`` or ``out``)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(self._item_key(partition, "done", model, event_id))
        pipe.get(self._item_key(partition, kind, model, event_id))
        done, other = await pipe.execute()
        return bool(done), other

    def _joins(self, predictions: list[dict[str, Any]], label: Any) -> list[dict[str, Any]]:
        return [{**prediction, "label": label} for prediction in predictions]

    def _labeled(self, partition: int, event: UnlabeledEvent, label: Any) -> tuple[str, str, bytes]:
        value = {
            "event_id": event.event_id,
            "model": event.model,
            "ts": event.ts,
            "features": event.features,
            "label": label,
            # Filled in with the entry's seq at commit: the trainer's duplicate filter.
            "join": {"source": f"{self.group}/{partition}", "seq": None},
        }
        return (self.topics.labeled, event.model, orjson.dumps(value))

    def _remember(
        self,
        partition: int,
        kind: str,
        model: str,
        event_id: str,
        value: dict[str, Any],
        spec: ModelSpec,
    ) -> list[list[str]]:
        key = self._item_key(partition, kind, model, event_id)
        horizon_ms = int(spec.label_horizon * 1000)
        deadline = int(self.clock() * 1000) + horizon_ms
        return [
            [
                "SET",
                key,
                orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode(),
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

    async def _commit_message(
        self,
        state: _Partition,
        partition: int,
        topic: str,
        offset: int,
        commands: list[list[str]],
        publish: list[tuple[str, str, bytes]],
        joins: list[dict[str, Any]],
        model: str | None,
    ) -> bool:
        entry: dict[str, Any] | None = None
        if publish or joins:
            seq = state.seq + 1
            entry = {
                "seq": seq,
                "model": model,
                "publish": [_sealed(record, seq) for record in publish],
                "joins": joins,
            }
            commands = [
                *commands,
                ["RPUSH", self._key(partition, "outbox"), orjson.dumps(entry).decode()],
                ["SET", self._key(partition, "seq"), str(seq)],
            ]
        commands.append(["SET", self._key(partition, "cursor", topic), str(offset)])
        committed = await self._commit(
            keys=[self._epoch_key(partition)],
            args=[state.epoch, orjson.dumps(commands).decode()],
        )
        if not committed:
            self._lose(partition)
            return False
        state.cursors[topic] = offset
        for command in commands:
            if command[0] == "HINCRBY":
                state.served[command[2]] += 1
        if entry is not None:
            state.seq = int(entry["seq"])
            await self._apply_joins(state, entry, decide=True)
            self._publish(state, entry)
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

    def _publish(self, state: _Partition, entry: dict[str, Any]) -> None:
        deliveries: list[asyncio.Future[None]] = [
            asyncio.ensure_future(self._deliver(topic, key.encode(), base64.b64decode(value)))
            for topic, key, value in entry["publish"]
        ]
        state.in_flight.append((int(entry["seq"]), deliveries))

    async def _deliver(self, topic: str, key: bytes, value: bytes) -> None:
        """Send a record and wait until the broker has it."""
        await (await self.send(topic, key, value))

    async def checkpoint(self) -> None:
        """Step 5 for every owned partition: snapshot the boards, trim the outbox."""
        for partition, state in list(self.partitions.items()):
            published = state.published
            while state.in_flight and all(d.done() for d in state.in_flight[0][1]):
                seq, deliveries = state.in_flight[0]
                if any(d.cancelled() or d.exception() is not None for d in deliveries):
                    # Left in the outbox: the next owner (or this worker's restart) sends it again.
                    log.error("an outbox entry of partition %d was not delivered", partition)
                    break
                state.in_flight.popleft()
                published = seq
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
            if trim_to >= state.outbox_first:
                await self.client.ltrim(
                    self._key(partition, "outbox"), trim_to - state.outbox_first + 1, -1
                )
                state.outbox_first = trim_to + 1

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
            members = await self.client.zrangebyscore(
                expiry, "-inf", now_ms, start=0, num=SWEEP_BATCH
            )
            if not members:
                continue
            commands: list[list[str]] = []
            publish: list[tuple[str, str, bytes]] = []
            for member in cast(list[bytes], members):
                kind, model, event_id = orjson.loads(member)
                key = self._item_key(partition, kind, model, event_id)
                commands += [["ZREM", expiry, member.decode()], ["DEL", key]]
                if kind == "pred":
                    commands.append(
                        ["HINCRBY", self._key(partition, "counts"), f"expired|{model}", "1"]
                    )
                    continue
                waiting = await self.client.get(key)
                commands.append(
                    ["HINCRBY", self._key(partition, "counts"), f"unmatched|{model}", "1"]
                )
                if waiting is not None:
                    outcome = orjson.loads(waiting)
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
                    publish.append((self.topics.dlq, dlq_key.decode(), value))
            seq = state.seq + 1
            if publish:
                entry = {
                    "seq": seq,
                    "model": None,
                    "publish": [_sealed(r, seq) for r in publish],
                    "joins": [],
                }
                commands += [
                    ["RPUSH", self._key(partition, "outbox"), orjson.dumps(entry).decode()],
                    ["SET", self._key(partition, "seq"), str(seq)],
                ]
            if not await self._commit(
                keys=[self._epoch_key(partition)],
                args=[state.epoch, orjson.dumps(commands).decode()],
            ):
                self._lose(partition)
                continue
            for command in commands:
                if command[0] == "HINCRBY":
                    state.counts[command[2]] += 1
            if publish:
                state.seq = seq
                self._publish(state, entry)

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


def _sealed(record: tuple[str, str, bytes], seq: int) -> list[str]:
    topic, key, value = record
    if b'"join"' in value:
        parsed = orjson.loads(value)
        if isinstance(parsed, dict) and isinstance(parsed.get("join"), dict):
            parsed["join"]["seq"] = seq
            value = orjson.dumps(parsed)
    return [topic, key, base64.b64encode(value).decode()]


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
