"""The trainer worker: a faust app whose agent feeds labeled events to ``trainers``.

The agent is thin: it hands each raw record to :class:`TrainingRuntime`, which decodes it, sends a
malformed one to the dead-letter topic with its reason, lets the model's
:class:`~trainers.trainer.ModelTrainer` learn a good one, publishes a promotion, and checkpoints.

Exactly-once learning rests on three rules (the checkpoint protocol is in
:mod:`streams.workers.checkpoint`):

- the agent runs with ``concurrency=1`` on a stream without automatic acknowledgements, and an
  event is acknowledged to faust only after the checkpoint that covers it is saved;
- on its first event from a partition, the worker claims the partition (fencing out any previous
  owner) and restores its models and cursor; events at or before the cursor are skipped;
- a promotion is published once per (model, version): the trainer is deterministic, so replaying
  events after a crash issues the same versions again, and those already in the registry are not
  published twice.

An operator's promote or rollback (a manual registry record, see :mod:`streams.registry.records`) is
obeyed: when such a record is the model's serving record, the model's trainer adopts its
candidate as champion at that version, and challengers go on competing against it. The worker
reads the whole registry when it claims a partition, and follows new records while it runs.

Promotion, in order: serialize the promoted candidate; store it in Redis under its sha256 digest;
sign it; publish the model version to the registry topic and wait for the broker's
acknowledgement; checkpoint. No registry record is ever published without its stored artifact.

Redis outages: training goes on. A promotion whose artifact cannot be stored waits in order
and is retried with exponential backoff (0.5 s doubling to 30 s); checkpoints are retried on the
same schedule and never cover an event whose promotion is still waiting, so nothing is
acknowledged to Kafka until Redis is back. Each failure is logged as an error, and each model's
metrics report carries ``waiting_promotions`` and ``events_since_checkpoint``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import faust
import orjson
import redis
import redis.asyncio as aioredis
from faust.types import TP, EventT

from streams.admin import DEAD_LETTER_MAX_BYTES
from streams.config import DriftlineConfig, faust_broker_options
from streams.contract import InvalidEvent, dead_letter_record, decode_labeled
from streams.registry import artifacts
from streams.registry.client import RegistrySubscription
from streams.registry.records import ArtifactRef, ModelVersion, read_registry, serving_records
from streams.workers.checkpoint import CheckpointFenced, CheckpointStore
from trainers.errors import LabelError
from trainers.trainer import ModelTrainer, Promotion

log = logging.getLogger("driftline.trainer")

FETCH_BYTES_PER_PARTITION = 16 * 1024 * 1024
MAX_POLL_RECORDS = 10_000
REGISTRY_POLL_SECONDS = 0.5
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0

Send = Callable[[str, bytes, bytes], Awaitable[Awaitable[Any]]]
"""Sends (topic, key, value); returns an awaitable that resolves once the broker has the record."""


@dataclass
class PartitionState:
    """What a worker holds for one partition it owns."""

    epoch: int
    cursor: int
    trainers: dict[str, ModelTrainer]
    pending: list[EventT] = field(default_factory=list)
    dirty: set[str] = field(default_factory=set)


class WaitingPromotion(NamedTuple):
    """A promotion and its packed artifact, to be stored and published in order."""

    promotion: Promotion
    blob: bytes
    ref: ArtifactRef


class TrainingRuntime:
    """Everything the trainer agent does, apart from being a faust agent.

    Parameters
    ----------
    config
        The parsed configuration (models, worker settings, topics).
    checkpoints
        Where partition checkpoints are saved.
    redis_client
        Where artifacts are stored.
    send
        Produces a record and gives back its delivery.
    read_registry
        Reads every record of the registry topic, in log order.
    signing_key
        The artifact signing key.
    redis_prefix
        Namespace of driftline's Redis keys.
    """

    def __init__(
        self,
        config: DriftlineConfig,
        *,
        checkpoints: CheckpointStore,
        redis_client: aioredis.Redis,
        send: Send,
        read_registry: Callable[[], Awaitable[list[ModelVersion]]],
        signing_key: bytes,
        redis_prefix: str,
    ) -> None:
        self.config = config
        self.checkpoints = checkpoints
        self.redis = redis_client
        self.send = send
        self.read_registry = read_registry
        self.signing_key = signing_key
        self.redis_prefix = redis_prefix
        self.partitions: dict[TP, PartitionState] = {}
        # Partitions another worker claimed: their events are left alone until reassigned.
        self.lost: set[TP] = set()
        self.published: dict[str, int] = {}
        self.serving: dict[str, ModelVersion] = {}
        self.registry_caught_up = asyncio.Event()
        self.lock = asyncio.Lock()
        self._in_flight: list[Awaitable[Any]] = []
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        # Promotions packed (serialized, signed) once, waiting for Redis to store their artifact.
        self._waiting_promotions: collections.deque[WaitingPromotion] = collections.deque()
        self._retry_delay = RETRY_FIRST_SECONDS
        self._retry_at = 0.0

    async def handle(self, event: EventT) -> None:
        """Handle one record of the labeled-events topic (the agent's whole body)."""
        message = event.message
        await self.registry_caught_up.wait()
        async with self.lock:
            if message.tp in self.lost:
                return
            state = self.partitions.get(message.tp) or await self._claim(message.tp)
            if message.offset <= state.cursor:
                event.ack()  # already in the restored state
                return
            state.pending.append(event)
            # Before learning: a promotion checkpoints at once, and its snapshot holds this event.
            state.cursor = message.offset
            self._since_checkpoint += 1
            await self._learn(state, message.tp, message.offset, message.key, message.value)
            if self._checkpoint_due():
                await self._checkpoint()

    async def checkpoint(self) -> None:
        """Checkpoint if one is due: the timer's call, so that an idle stream is committed too."""
        async with self.lock:
            if self._checkpoint_due():
                await self._checkpoint()

    async def release(self, revoked: set[TP]) -> None:
        """Checkpoint partitions this worker loses, then forget them.

        Their promotions still waiting for Redis are forgotten too: the new owner replays the
        events after the last checkpoint and issues them again.
        """
        async with self.lock:
            await self._checkpoint()
            for tp in revoked:
                state = self.partitions.pop(tp, None)
                if state is not None:
                    self._waiting_promotions = collections.deque(
                        waiting
                        for waiting in self._waiting_promotions
                        if waiting.promotion.model not in state.trainers
                    )

    def assigned(self, tps: set[TP]) -> None:
        """Partitions (re)assigned by the group may be claimed again."""
        self.lost -= tps
        labeled = sorted(tp.partition for tp in tps if tp.topic == self.config.topics.labeled)
        log.info("assigned partitions %s of %s", labeled, self.config.topics.labeled)

    async def obey(self, records: list[ModelVersion], *, caught_up: bool) -> None:
        """Take in registry records (in log order) from the follower of the registry topic.

        The follower reads the registry from its beginning; until it has caught up with the end
        the topic had when it started, a manual record it returns may be superseded by a later
        one, so manual records are obeyed only from then on.
        """
        async with self.lock:
            self._note_published(records)
            self.serving.update(serving_records(records))
            if caught_up and not self.registry_caught_up.is_set():
                log.info("registry read to its end: %d models serving", len(self.serving))
                self.registry_caught_up.set()
            for state in self.partitions.values():
                for model in state.trainers:
                    self._obey(state, model)

    def _note_published(self, records: list[ModelVersion]) -> None:
        for record in records:
            self.published[record.model] = max(self.published.get(record.model, 0), record.version)

    def _obey(self, state: PartitionState, model: str) -> None:
        record, trainer = self.serving.get(model), state.trainers[model]
        if record is None or not record.is_manual or trainer.champion_version == record.version:
            return
        trainer.adopt(
            record.version,
            record.candidate["name"],
            f"{record.kind} by {record.operator}: {record.reason}",
        )
        state.dirty.add(model)
        log.info("%s: %s to v%d by %s obeyed", model, record.kind, record.version, record.operator)

    async def _claim(self, tp: TP) -> PartitionState:
        while True:
            try:
                claim = await self.checkpoints.claim(tp.topic, tp.partition)
                break
            except redis.RedisError as error:
                # Without its checkpoint a partition cannot be trained: wait for Redis.
                log.error("cannot claim %s[%d], Redis unavailable: %s", *tp, error)
                await asyncio.sleep(self._backoff())
        # The follower may lag; versions another owner published must not be published again.
        self._note_published(await self.read_registry())
        trainers = {
            model: ModelTrainer.restore(blob)
            for model, blob in claim.snapshots.items()
            if model in self.config.models
        }
        log.info(
            "claimed %s[%d] (epoch %d): resuming after offset %d with models %s",
            tp.topic,
            tp.partition,
            claim.epoch,
            claim.cursor,
            sorted(trainers),
        )
        state = PartitionState(epoch=claim.epoch, cursor=claim.cursor, trainers=trainers)
        for model in trainers:
            self._obey(state, model)
        self.partitions[tp] = state
        return state

    async def _learn(
        self, state: PartitionState, tp: TP, offset: int, key: bytes | None, raw: bytes | None
    ) -> None:
        try:
            event = decode_labeled(raw, max_bytes=self.config.worker.max_event_bytes)
            spec = self.config.models.get(event.model)
            if spec is None:
                raise InvalidEvent("unknown_model", f"model {event.model!r} is not configured")
            trainer = state.trainers.get(event.model)
            if trainer is None:
                trainer = state.trainers[event.model] = ModelTrainer(spec)
                self._obey(state, event.model)
            promotion = trainer.learn(
                event.features, event.label, topic=tp.topic, partition=tp.partition, offset=offset
            )
        except InvalidEvent as error:
            await self._dead_letter(raw, error, tp, offset, key)
            return
        except LabelError as error:
            await self._dead_letter(
                raw, InvalidEvent("label_mismatch", str(error)), tp, offset, key
            )
            return
        except Exception as error:  # a model that fails on an event must not stop the worker
            log.exception("model error on %s[%d]@%d", tp.topic, tp.partition, offset)
            reason = InvalidEvent("model_error", f"{type(error).__name__}: {error}")
            await self._dead_letter(raw, reason, tp, offset, key)
            return
        state.dirty.add(event.model)
        if trainer.events % self.config.worker.metrics_every == 0:
            await self._publish_metrics(trainer, offset)
        if promotion is not None:
            await self._promote(promotion)
            if not self._waiting_promotions:
                await self._checkpoint()

    async def _dead_letter(
        self, raw: bytes | None, error: InvalidEvent, tp: TP, offset: int, key: bytes | None
    ) -> None:
        log.warning("dead letter %s[%d]@%d: %s", tp.topic, tp.partition, offset, error.reason)
        dlq_key, dlq_value = dead_letter_record(
            raw or b"", error, topic=tp.topic, partition=tp.partition, offset=offset, key=key
        )
        self._in_flight.append(await self.send(self.config.topics.dlq, dlq_key, dlq_value))

    async def _publish_metrics(self, trainer: ModelTrainer, offset: int) -> None:
        # For dashboards and the demo: not part of the exactly-once state, so a replay after a
        # crash may publish a report twice (same model, same event count).
        report = {
            **trainer.report(),
            "offset": offset,
            "waiting_promotions": len(self._waiting_promotions),
            "events_since_checkpoint": self._since_checkpoint,
        }
        await self.send(
            self.config.topics.metrics,
            trainer.spec.name.encode(),
            orjson.dumps(report, option=orjson.OPT_NON_STR_KEYS),
        )

    async def _promote(self, promotion: Promotion) -> None:
        if promotion.version <= self.published.get(promotion.model, 0):
            log.info("%s v%d is already in the registry", promotion.model, promotion.version)
            return
        blob, ref = artifacts.pack(
            promotion.estimator,
            model=promotion.model,
            version=promotion.version,
            prefix=self.redis_prefix,
            key=self.signing_key,
        )
        self._waiting_promotions.append(WaitingPromotion(promotion, blob, ref))
        await self._publish_waiting()

    async def _publish_waiting(self) -> bool:
        """Publish the waiting promotions in order; False when Redis refused an artifact."""
        while self._waiting_promotions:
            promotion, blob, ref = self._waiting_promotions[0]
            try:
                await artifacts.store(self.redis, blob, ref)
            except redis.RedisError as error:
                log.error(
                    "%s v%d waits: its artifact cannot be stored (%s); %d promotion(s) waiting",
                    promotion.model,
                    promotion.version,
                    error,
                    len(self._waiting_promotions),
                )
                self._retry_later()
                return False
            record = ModelVersion(
                model=promotion.model,
                version=promotion.version,
                kind=promotion.kind,
                candidate={"name": promotion.candidate, "params": promotion.candidate_params},
                previous_version=promotion.previous_version,
                reason=promotion.reason,
                evidence=promotion.evidence,
                lineage=promotion.lineage,
                artifact=ref,
            )
            delivery = await self.send(
                self.config.topics.registry, promotion.model.encode(), record.to_json()
            )
            await delivery
            self._waiting_promotions.popleft()
            self.published[promotion.model] = promotion.version
            log.info(
                "published %s v%d (%s): %s",
                promotion.model,
                promotion.version,
                promotion.candidate,
                promotion.reason,
            )
        return True

    def _backoff(self) -> float:
        delay = self._retry_delay
        self._retry_delay = min(2 * self._retry_delay, RETRY_MAX_SECONDS)
        return delay

    def _retry_later(self) -> None:
        self._retry_at = time.monotonic() + self._backoff()

    def _checkpoint_due(self) -> bool:
        settings = self.config.worker
        now = time.monotonic()
        return now >= self._retry_at and (
            self._since_checkpoint >= settings.checkpoint_every
            or now - self._last_checkpoint >= settings.checkpoint_interval
        )

    async def _checkpoint(self) -> None:
        # 1. flush: every dead letter and registry record is on the broker.
        in_flight, self._in_flight = self._in_flight, []
        await asyncio.gather(*in_flight)
        if not await self._publish_waiting():
            return
        for tp, state in list(self.partitions.items()):
            if not state.pending and not state.dirty:
                continue
            # 2. persist: cursor and snapshots, atomically, unless fenced.
            try:
                await self.checkpoints.save(
                    tp.topic,
                    tp.partition,
                    epoch=state.epoch,
                    cursor=state.cursor,
                    snapshots={m: state.trainers[m].snapshot() for m in state.dirty},
                )
            except CheckpointFenced:
                log.warning("%s[%d] was taken over by another worker; dropping it", *tp)
                del self.partitions[tp]
                self.lost.add(tp)
                continue
            except redis.RedisError as error:
                log.error("checkpoint of %s[%d] deferred, Redis unavailable: %s", *tp, error)
                self._retry_later()
                return
            # 3. commit: faust may now commit these offsets.
            for event in state.pending:
                event.ack()
            state.pending.clear()
            state.dirty.clear()
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._retry_delay = RETRY_FIRST_SECONDS


def create_app(
    config: DriftlineConfig,
    *,
    kafka: dict[str, Any],
    redis_url: str,
    redis_prefix: str,
    signing_key: bytes,
) -> faust.App:
    """The trainer worker's faust app: one topic in, one agent, a checkpoint timer."""
    app = faust.App(
        config.worker.group,
        **faust_broker_options(kafka),
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=DEAD_LETTER_MAX_BYTES,
        topic_partitions=config.worker.partitions,
        stream_wait_empty=False,
        # faust's defaults fetch little per request: a no-op agent reads ~4k events/s here, and
        # ~18k/s with larger fetches (bench/pipeline_throughput.py).
        consumer_max_fetch_size=FETCH_BYTES_PER_PARTITION,
        broker_max_poll_records=MAX_POLL_RECORDS,
        # A worker that dies is noticed after this long, and its partitions move on.
        broker_session_timeout=config.worker.session_timeout,
        broker_heartbeat_interval=config.worker.session_timeout / 5,
    )
    labeled = app.topic(config.topics.labeled, key_serializer="raw", value_serializer="raw")
    topics = {
        name: app.topic(name, key_serializer="raw", value_serializer="raw")
        for name in (config.topics.dlq, config.topics.registry, config.topics.metrics)
    }
    # Timeouts, so that a Redis that hangs is an error to retry, not a stalled worker.
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)

    async def send(topic: str, key: bytes, value: bytes) -> Awaitable[Any]:
        return await topics[topic].send(key=key, value=value)

    async def registry_records() -> list[ModelVersion]:
        return await asyncio.to_thread(lambda: list(read_registry(config.topics.registry, kafka)))

    runtime = TrainingRuntime(
        config,
        checkpoints=CheckpointStore(client, prefix=redis_prefix, group=config.worker.group),
        redis_client=client,
        send=send,
        read_registry=registry_records,
        signing_key=signing_key,
        redis_prefix=redis_prefix,
    )
    app.driftline_runtime = runtime

    @app.agent(labeled, concurrency=1)
    async def train(stream: faust.StreamT) -> None:
        async for event in stream.noack().events():
            await runtime.handle(event)

    @app.timer(interval=config.worker.checkpoint_interval)
    async def checkpoint() -> None:
        await runtime.checkpoint()

    subscription: RegistrySubscription | None = None

    @app.timer(interval=REGISTRY_POLL_SECONDS)
    async def follow_registry() -> None:
        nonlocal subscription
        if subscription is None:
            subscription = await asyncio.to_thread(
                RegistrySubscription, config.topics.registry, kafka, from_beginning=True
            )
        follower = subscription
        records, caught_up = await asyncio.to_thread(
            lambda: (follower.poll(0.1), follower.caught_up)
        )
        await runtime.obey(records, caught_up=caught_up)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[TP], **_: Any) -> None:
        await runtime.release(revoked)

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set[TP], **_: Any) -> None:
        runtime.assigned(assigned)

    return app
