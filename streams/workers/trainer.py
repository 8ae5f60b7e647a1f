"""The trainer worker: a faust agent that feeds labeled events to ``trainers``, exactly once.

The agent is thin: it hands each raw record to :class:`TrainingRuntime`, which

1. admits it through the :class:`~streams.workers.ledger.PartitionLedger` (claim, skip, advance);
2. decodes it and checks that it belongs here: its record key is its ``model``
   (``key_mismatch`` otherwise), the model is configured (``unknown_model``), and the model is
   owned by this partition (``wrong_partition``: a producer with another partitioner, such as
   kcat's default CRC32, must not start a second, independent trainer of the same model);
3. lets the model's :class:`~trainers.trainer.ModelTrainer` learn it; a malformed event or a
   label that does not fit goes to the dead-letter topic with its reason instead;
4. queues a promotion, if the event caused one, in the :class:`~streams.workers.outbox.Outbox`,
   and checkpoints at once (otherwise when due).

On a claim, a model's trainer is restored from its snapshot under the *current* configuration:
policy and window come from the file, a new candidate starts fresh, a removed one is dropped,
and a candidate whose parameters changed stops the partition unless the operator passed
``driftline worker --reset-candidate MODEL/NAME``.

An operator's promote or rollback (a manual registry record, see
:mod:`streams.registry.records`) is obeyed: when such a record is the model's serving record, the
trainer adopts its candidate as champion at that version, and challengers go on competing
against it. The worker reads the whole registry before it learns, and follows new records while
it runs; the registry readers drop records that the signing key did not sign.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
from faust.types import TP, EventT

from streams.config import DriftlineConfig
from streams.contract import InvalidEvent, ReasonCode, decode_labeled
from streams.registry.artifacts import Artifact, store
from streams.registry.client import RegistrySubscription
from streams.registry.records import ModelVersion, read_registry, serving_records
from streams.settings import Settings
from streams.workers.app import WorkerApp, dead_letter_of
from streams.workers.checkpoint import CheckpointRefused, Claim, RedisCheckpointStore
from streams.workers.ledger import ConsumerControl, PartitionLedger, PartitionState
from streams.workers.logs import Progress
from streams.workers.outbox import Outbox, Send
from trainers.errors import ConfigError, LabelError, SnapshotError
from trainers.spec import reset_targets
from trainers.trainer import ModelTrainer

__all__ = ["TrainingRuntime", "create_app"]

log = logging.getLogger("driftline.trainer")

REGISTRY_POLL_SECONDS = 0.5
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OSError)


class TrainingRuntime:
    """Everything the trainer agent does, apart from being a faust agent.

    Parameters
    ----------
    config
        The parsed configuration (models, worker settings, topics).
    checkpoints
        Where partitions are claimed, checkpointed and their models' owners recorded.
    outbox
        Where dead letters and promotions go.
    consumer
        Pauses, resumes and gives up partitions.
    read_registry
        Reads every signed record of the registry topic, in log order.
    reset_candidates
        Per model, the candidates whose changed parameters the operator accepts
        (``--reset-candidate MODEL/NAME``): they start fresh instead of stopping their partition.
    """

    def __init__(
        self,
        config: DriftlineConfig,
        *,
        checkpoints: RedisCheckpointStore,
        outbox: Outbox,
        consumer: ConsumerControl,
        read_registry: Callable[[], Awaitable[list[ModelVersion]]],
        reset_candidates: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        self.config = config
        self.checkpoints = checkpoints
        self.outbox = outbox
        self.read_registry = read_registry
        self.reset_candidates = reset_candidates or {}
        self.ledger = PartitionLedger(
            checkpoints,
            outbox=outbox,
            restore=self._restore,
            consumer=consumer,
            checkpoint_every=config.worker.checkpoint_every,
            checkpoint_interval=config.worker.checkpoint_interval,
            max_unacked=config.worker.max_unacked_events,
            redis_errors=REDIS_ERRORS,
        )
        self.serving: dict[str, ModelVersion] = {}
        self.owners: dict[str, int] = {}
        self.registry_caught_up = asyncio.Event()
        self.lock = asyncio.Lock()
        self.progress = Progress(log, "learned")

    async def handle(self, event: EventT) -> None:
        """Handle one record of the labeled-events topic (the agent's whole body)."""
        await self.registry_caught_up.wait()
        async with self.lock:
            state = await self.ledger.admit(event)
            if state is None:
                return
            promoted = await self._learn(state, event.message)
            if promoted and not self.outbox.waiting:
                await self.ledger.checkpoint()
            else:
                await self.ledger.checkpoint_if_due()
            await self.ledger.make_room()

    async def checkpoint(self) -> None:
        """Checkpoint if one is due: the timer's call, so that an idle stream is committed too."""
        async with self.lock:
            await self.ledger.checkpoint_if_due()

    async def stop(self) -> None:
        """Checkpoint everything before the worker exits, so a restart replays nothing."""
        async with self.lock:
            if await self.ledger.checkpoint():
                log.info("final checkpoint saved")

    async def release(self, revoked: set[TP]) -> None:
        """Checkpoint the partitions this worker loses, then forget them."""
        async with self.lock:
            await self.ledger.release(revoked)

    def assigned(self, tps: set[TP]) -> None:
        """Partitions (re)assigned by the group may be claimed again."""
        self.ledger.assigned(tps)
        labeled = sorted(tp.partition for tp in tps if tp.topic == self.config.topics.labeled)
        log.info("assigned partitions %s of %s", labeled, self.config.topics.labeled)

    async def obey(self, records: list[ModelVersion], *, caught_up: bool) -> None:
        """Take in registry records (in log order) from the follower of the registry topic.

        The follower reads the registry from its beginning; until it has caught up with the end
        the topic had when it started, a manual record it returns may be superseded by a later
        one, so manual records are obeyed only from then on.
        """
        async with self.lock:
            self.outbox.note_published(records)
            self.serving.update(serving_records(records))
            if caught_up and not self.registry_caught_up.is_set():
                log.info("registry read to its end: %d models serving", len(self.serving))
                self.registry_caught_up.set()
            for state in self.ledger.partitions.values():
                for model, trainer in state.models.items():
                    if self._obey(model, trainer):
                        state.dirty.add(model)

    def _obey(self, model: str, trainer: ModelTrainer) -> bool:
        """Adopt the operator's version of ``model`` if it serves; True when the trainer changed."""
        record = self.serving.get(model)
        if record is None or not record.is_manual or trainer.champion_version == record.version:
            return False
        trainer.adopt(
            record.version,
            record.candidate["name"],
            f"{record.kind} by {record.operator}: {record.reason}",
        )
        log.info("%s: %s to v%d by %s obeyed", model, record.kind, record.version, record.operator)
        return True

    async def _restore(self, tp: TP, claim: Claim) -> dict[str, Any]:
        # The follower may lag; versions another owner published must not be published again.
        self.outbox.note_published(await self.read_registry())
        trainers: dict[str, Any] = {}
        for model, blob in claim.snapshots.items():
            spec = self.config.models.get(model)
            if spec is None:
                log.warning("%s[%d]: model %r is no longer configured; dropped", *tp, model)
                continue
            try:
                trainer, changes = ModelTrainer.restore(
                    blob, spec, reset=self.reset_candidates.get(model, ())
                )
            except (ConfigError, SnapshotError) as error:
                raise CheckpointRefused(f"model {model!r}: {error}") from error
            if changes:
                log.warning("%s: restored with configuration changes: %s", model, changes)
            # Re-derived from the registry after every claim, so it needs no checkpoint of its own.
            self._obey(model, trainer)
            trainers[model] = trainer
            self.owners[model] = tp.partition
        return trainers

    async def _learn(self, state: PartitionState, message: Any) -> bool:
        """Learn one admitted event; True when it caused a promotion."""
        tp, offset = message.tp, message.offset
        try:
            event = decode_labeled(message.value, max_bytes=self.config.worker.max_event_bytes)
            trainer = await self._trainer_for(state, tp, event.model, message.key)
            quarantined = len(trainer.quarantined)
            promotion = trainer.learn(
                event.features, event.label, source=f"{tp.topic}[{tp.partition}]", position=offset
            )
        except InvalidEvent as error:
            await self._dead_letter(message, error)
            return False
        except LabelError as error:
            await self._dead_letter(message, InvalidEvent(ReasonCode.LABEL_MISMATCH, str(error)))
            return False
        state.dirty.add(event.model)
        self.progress.handled()
        if len(trainer.quarantined) > quarantined:
            log.error(
                "%s: candidates quarantined at %s[%d]@%d (they stop learning and competing; "
                "--reset-candidate MODEL/NAME starts one afresh): %s",
                event.model,
                tp.topic,
                tp.partition,
                offset,
                trainer.quarantined,
            )
        if trainer.events % self.config.worker.metrics_every == 0:
            await self._publish_metrics(trainer, offset)
        if promotion is None:
            return False
        await self.outbox.promote(promotion)
        return True

    async def _trainer_for(
        self, state: PartitionState, tp: TP, model: str, key: bytes | None
    ) -> ModelTrainer:
        if key is None or key != model.encode():
            raise InvalidEvent(
                ReasonCode.KEY_MISMATCH,
                f"record key {key!r} is not the event's model {model!r}: key each event by its "
                "model, so that all of a model's events reach the partition that trains it",
            )
        spec = self.config.models.get(model)
        if spec is None:
            raise InvalidEvent(ReasonCode.UNKNOWN_MODEL, f"model {model!r} is not configured")
        trainer = state.models.get(model)
        if trainer is not None:
            return trainer
        owner = self.owners.get(model)
        if owner is None:
            owner = self.owners[model] = await self._owner(tp, model)
        if owner != tp.partition:
            raise InvalidEvent(
                ReasonCode.WRONG_PARTITION,
                f"model {model!r} is trained on partition {owner} of {tp.topic}, not "
                f"{tp.partition}: produce with the murmur2 partitioner of Kafka's Java client "
                "and kafka-python (kcat: -X partitioner=murmur2_random)",
            )
        trainer = state.models[model] = ModelTrainer(spec)
        self._obey(model, trainer)
        return trainer

    async def _owner(self, tp: TP, model: str) -> int:
        while True:
            try:
                return await self.checkpoints.own(tp.topic, model, tp.partition)
            except REDIS_ERRORS as error:
                log.error("cannot record the owner of %s, Redis unavailable: %s", model, error)
                await asyncio.sleep(self.ledger.backoff())

    async def _dead_letter(self, message: Any, error: InvalidEvent) -> None:
        self.progress.dead_letter(error.code)
        key, value = dead_letter_of(message, error)
        await self.outbox.send(self.config.topics.dlq, key, value)

    async def _publish_metrics(self, trainer: ModelTrainer, offset: int) -> None:
        # For dashboards and the demo: not part of the exactly-once state, so a replay after a
        # crash may publish a report twice (same model, same event count).
        report = {
            **trainer.report(),
            "offset": offset,
            "waiting_promotions": self.outbox.waiting,
            "events_since_checkpoint": self.ledger.since_checkpoint,
        }
        await self.outbox.send_untracked(
            self.config.topics.metrics,
            trainer.spec.name.encode(),
            orjson.dumps(report, option=orjson.OPT_NON_STR_KEYS),
        )


def create_app(
    config: DriftlineConfig,
    settings: Settings,
    *,
    reset_candidates: Collection[str] = frozenset(),
) -> WorkerApp:
    """The trainer worker's faust app: one topic in, one agent, a checkpoint timer.

    Raises :class:`~trainers.errors.ConfigError` for a ``reset_candidates`` entry that names no
    configured ``MODEL/NAME``.
    """
    reset = reset_targets(reset_candidates, config.models)
    topics, kafka, signing_key = config.topics, settings.kafka, settings.signing_key()
    redis_prefix = settings.redis_prefix
    worker = WorkerApp(
        config.worker.group, config, kafka, outputs=(topics.dlq, topics.registry, topics.metrics)
    )
    app = worker.app
    # Timeouts, so that a Redis that hangs is an error to retry, not a stalled worker.
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    send: Send = worker.send

    async def store_artifact(artifact: Artifact) -> None:
        await store(client, artifact)

    async def registry_records() -> list[ModelVersion]:
        return await asyncio.to_thread(
            lambda: list(read_registry(topics.registry, kafka, key=signing_key))
        )

    runtime = TrainingRuntime(
        config,
        checkpoints=RedisCheckpointStore(
            client, prefix=redis_prefix, group=config.worker.group, key=signing_key
        ),
        outbox=Outbox(
            send=send,
            store_artifact=store_artifact,
            registry_topic=topics.registry,
            signing_key=signing_key,
            redis_prefix=redis_prefix,
            store_errors=REDIS_ERRORS,
        ),
        consumer=worker,
        read_registry=registry_records,
        reset_candidates=reset,
    )
    worker.consume(topics.labeled, runtime.handle)

    worker.every(config.worker.checkpoint_interval, runtime.checkpoint)
    worker.every(config.worker.progress_interval, runtime.progress.log)
    worker.on_shutdown(runtime.stop)

    subscription: RegistrySubscription | None = None

    @app.timer(interval=REGISTRY_POLL_SECONDS)
    async def follow_registry() -> None:
        nonlocal subscription
        if subscription is None:
            subscription = await asyncio.to_thread(
                RegistrySubscription, topics.registry, kafka, key=signing_key, from_beginning=True
            )
        follower = subscription
        records, caught_up = await asyncio.to_thread(
            lambda: (follower.poll(0.1), follower.caught_up)
        )
        await runtime.obey(records, caught_up=caught_up)

    worker.on_rebalance(revoked=runtime.release, assigned=runtime.assigned)

    return worker
