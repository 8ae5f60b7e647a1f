"""The trainer worker: a faust agent that feeds labeled events to ``trainers``, exactly once.

The agent is thin: it hands each raw record to :class:`TrainingRuntime`, which

1. admits it through the :class:`~streams.workers.ledger.PartitionLedger` (claim, skip, advance);
2. decodes it and checks that it belongs here: its record key is its ``model``
   (``key_mismatch`` otherwise), the model is configured (``unknown_model``), and the model is
   owned by this partition (``wrong_partition``: a producer with another partitioner, such as
   kcat's default CRC32, must not start a second, independent trainer of the same model);
3. lets the model's :class:`~trainers.trainer.ModelTrainer` learn it; a malformed event or a
   label that does not fit goes to the dead-letter topic with its reason instead;
4. queues the drift and action notices the event caused (see :mod:`trainers.actions`), then its
   promotion, if any, in the :class:`~streams.workers.outbox.Outbox`, and checkpoints at once
   (otherwise when due).

Window refits (``sklearn_window`` candidates) are fitted off the event loop by a
:class:`~streams.workers.refits.RefitPool`, which hands each result in before the event that
installs it.

On a claim, a model's trainer is restored from its snapshot under the *current* configuration:
policy and window come from the file, a new candidate starts fresh, a removed one is dropped,
and a candidate whose parameters changed stops the partition unless the operator passed
``driftline worker --reset-candidate MODEL/NAME``.

The registry's serving state (:func:`streams.registry.records.serving_state`) is obeyed. When
the stable record of a model is one the trainer did not issue itself (an operator's ``manual``
promote, a ``rollout`` or a ``rollback``, by an operator or the scorer's guardrail) and names
another version than the trainer's champion, or ends the trial the trainer is waiting on, the
trainer adopts that version (:meth:`~trainers.trainer.ModelTrainer.adopt`) with its frozen
artifact, fetched from Redis and checked like any artifact: after a rollback the champion is the
version as served, not the live candidate of the same name that kept learning since.
An artifact that cannot be loaded is logged as an error and the version adopted without it (its
candidate's live state is kept, and the trainer tests no served copy until another version
serves). Challengers go on competing against the adopted champion. The worker reads the whole
registry before it learns, and follows new records while it runs; the registry readers drop
records that the signing key did not sign.
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
from streams.contract import (
    InvalidEvent,
    ReasonCode,
    RecordEntry,
    decode_labeled_record,
    event_position,
)
from streams.metrics import TrainerMetrics
from streams.registry.artifacts import Artifact, store
from streams.registry.client import RegistrySubscription
from streams.registry.records import (
    ModelVersion,
    RecordKind,
    ServingState,
    read_registry,
    serving_state,
)
from streams.settings import Settings
from streams.workers.app import WorkerApp, dead_letter_of
from streams.workers.checkpoint import CheckpointRefused, Claim, RedisCheckpointStore
from streams.workers.deadletters import ReadDeadLetters, Recall, read_dead_letters
from streams.workers.ledger import ConsumerControl, PartitionLedger, PartitionState
from streams.workers.logs import Progress
from streams.workers.outbox import Outbox, Send
from streams.workers.refits import RefitPool
from streams.workers.retry import KAFKA_ERRORS
from trainers.candidates import Candidate
from trainers.errors import ArtifactIntegrityError, ConfigError, LabelError, SnapshotError
from trainers.spec import reset_targets
from trainers.trainer import ModelTrainer

__all__ = ["TrainingRuntime", "create_app"]

log = logging.getLogger("driftline.trainer")

REGISTRY_POLL_SECONDS = 0.5
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OSError)
OBEYED_KINDS = frozenset({RecordKind.MANUAL, RecordKind.ROLLOUT, RecordKind.ROLLBACK})
"""Stable records the trainer adopts: versions it did not make serve itself."""


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
        Pauses and gives up partitions.
    read_registry
        Reads every signed record of the registry topic, in log order.
    read_dead_letters
        Reads what the dead-letter topic holds of a partition's events past a cursor (the
        ledger's recall).
    reset_candidates
        Per model, the candidates whose changed parameters the operator accepts
        (``--reset-candidate MODEL/NAME``): they start fresh instead of stopping their partition.
    load_artifact
        Fetches and checks the artifact a registry record names and unpickles it (raising when
        it cannot); None adopts versions without their artifacts.
    metrics
        Where the runtime counts for Prometheus; None counts nothing.
    """

    def __init__(
        self,
        config: DriftlineConfig,
        *,
        checkpoints: RedisCheckpointStore,
        outbox: Outbox,
        consumer: ConsumerControl,
        read_registry: Callable[[], Awaitable[list[ModelVersion]]],
        read_dead_letters: ReadDeadLetters,
        reset_candidates: Mapping[str, Collection[str]] | None = None,
        load_artifact: Callable[[ModelVersion], Awaitable[Any]] | None = None,
        metrics: TrainerMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.load_artifact = load_artifact
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
            dead_letter_topic=config.topics.dlq,
            read_dead_letters=read_dead_letters,
            kafka_errors=KAFKA_ERRORS,
            on_replayed=None if metrics is None else lambda: metrics.skipped("replayed"),
            on_checkpoint=None if metrics is None else metrics.checkpointed,
        )
        if metrics is not None:
            metrics.watch_outbox(lambda: outbox.waiting, lambda: self.ledger.since_checkpoint)
        #: Per model, what the registry says serves (stable and trial), as the follower read it.
        self.states: dict[str, ServingState] = {}
        #: Per model, the stable record (``states[model].stable``).
        self.serving: dict[str, ModelVersion] = {}
        #: Per model, the highest version the follower has read: a trial the trainer issued has
        #: ended only if its record was read and is no longer the model's trial.
        self.seen: dict[str, int] = {}
        self.owners: dict[str, int] = {}
        self.registry_caught_up = asyncio.Event()
        self.lock = asyncio.Lock()
        self.progress = Progress(log, "learned")
        self.refits = RefitPool()

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
        the topic had when it started, a record it returns may be superseded by a later one, so
        records are obeyed only from then on (no partition is claimed before).
        """
        async with self.lock:
            self.outbox.note_published(records)
            for record in records:
                self.seen[record.model] = max(self.seen.get(record.model, 0), record.version)
            # Folded into the state so far: a batch alone may hold a trial without its stable.
            folded = [
                kept
                for state in self.states.values()
                for kept in (state.stable, state.trial)
                if kept is not None
            ]
            self.states = serving_state([*folded, *records])
            self.serving = {model: state.stable for model, state in self.states.items()}
            if caught_up and not self.registry_caught_up.is_set():
                log.info("registry read to its end: %d models serving", len(self.serving))
                self.registry_caught_up.set()
            for state in self.ledger.partitions.values():
                for model, trainer in state.models.items():
                    if await self._obey(model, trainer):
                        state.dirty.add(model)

    async def _obey(self, model: str, trainer: ModelTrainer) -> bool:
        """Adopt the stable version of ``model`` if the trainer must (see the module docstring);
        True when the trainer changed."""
        state = self.states.get(model)
        if state is None:
            return False
        record = state.stable
        trial = trainer.trial
        # Rolled back, or replaced by an operator's trial: either way the stable version stays.
        trial_ended = (
            trial is not None
            and self.seen.get(model, 0) >= trial.version
            and (state.trial is None or state.trial.version != trial.version)
        )
        obeyed = record.kind in OBEYED_KINDS and trainer.champion_version != record.version
        if not (obeyed or trial_ended):
            return False
        estimator = await self._artifact(record)
        by = f" by {record.operator}" if record.operator else ""
        trainer.adopt(
            record.version,
            record.candidate["name"],
            f"{record.kind}{by}: {record.reason}",
            estimator=estimator,
            origin={"registry_offset": record.offset, "record_signature": record.signature},
        )
        log.info(
            "%s: %s to v%d%s obeyed (%s)",
            model,
            record.kind,
            record.version,
            by,
            "with its artifact" if estimator is not None else "without its artifact",
        )
        self._observe(trainer)
        return True

    async def _artifact(self, record: ModelVersion) -> Candidate | None:
        """The frozen artifact of ``record``, None (logged) when it cannot be had."""
        if self.load_artifact is None:
            return None
        try:
            estimator = await self.load_artifact(record)
        # Whatever fails (Redis, the digest or signature, unpickling), the registry's word still
        # stands: the version is adopted, only without the copy it serves.
        except Exception as error:
            log.error(
                "%s: cannot load the artifact of v%d (%s), adopting it without: %s",
                record.model,
                record.version,
                record.artifact.key,
                error,
            )
            return None
        if not isinstance(estimator, Candidate):
            log.error(
                "%s: the artifact of v%d holds a %s, not a candidate; adopting it without",
                record.model,
                record.version,
                type(estimator).__name__,
            )
            return None
        return estimator

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
            await self._obey(model, trainer)
            self._observe(trainer)
            trainers[model] = trainer
            self.owners[model] = tp.partition
        return trainers

    async def _learn(self, state: PartitionState, message: Any) -> bool:
        """Learn every event of one admitted record (one, or a batch, each dead-lettered alone
        if it is refused); True when one caused a registry record (a promotion or a notice)."""
        try:
            entries = decode_labeled_record(
                message.value, max_bytes=self.config.worker.max_event_bytes
            )
        except InvalidEvent as error:
            await self._dead_letter(state, message, error)
            return False
        self.ledger.weigh(state, len(entries))
        source = f"{message.tp.topic}[{message.tp.partition}]"
        recorded = False
        learned: dict[str, int] = {}
        for entry in entries:
            outcome = await self._learn_event(state, message, source, entry)
            if outcome is not None:
                model, caused_record = outcome
                learned[model] = learned.get(model, 0) + 1
                recorded |= caused_record
        # Counted per record, not per event: a batch's events share one model.
        for model, events in learned.items():
            self.progress.handled(events)
            if self.metrics is not None:
                self.metrics.learned(model, events)
        return recorded

    async def _learn_event(
        self, state: PartitionState, message: Any, source: str, entry: RecordEntry
    ) -> tuple[str, bool] | None:
        """Learn one event of an admitted record, from ``source`` (its topic and partition).

        Returns None when the event was not learned (dead-lettered, or a join already learned),
        else its model and whether it caused a registry record (a promotion, or a drift or
        action notice: see :mod:`trainers.actions`).
        """
        tp, offset = message.tp, message.offset
        position = event_position(offset, entry.index)
        try:
            event = entry.decoded
            if isinstance(event, InvalidEvent):
                raise event
            trainer = await self._trainer_for(state, tp, event.model, message.key)
            if event.join is not None and not _first_time(state, *event.join):
                if self.metrics is not None:
                    self.metrics.skipped("duplicate_join")
                # A scorer published this join again after a crash; a replay must skip it too.
                trainer.skip(source, position)
                return None
            await self.refits.ready(trainer)
            serving = trainer.champion_version or 0
            quarantined = len(trainer.quarantined)
            promotion = trainer.learn(
                event.features,
                event.label,
                source=source,
                position=position,
            )
        except InvalidEvent as error:
            await self._dead_letter(state, message, error, entry)
            return None
        except LabelError as error:
            refused = InvalidEvent(ReasonCode.LABEL_MISMATCH, str(error))
            await self._dead_letter(state, message, refused, entry)
            return None
        state.dirty.add(event.model)
        if len(trainer.quarantined) > quarantined:
            log.error(
                "%s: candidates quarantined at %s[%d], position %d (they stop learning and "
                "competing; --reset-candidate MODEL/NAME starts one afresh): %s",
                event.model,
                tp.topic,
                tp.partition,
                position,
                trainer.quarantined,
            )
        if trainer.events % self.config.worker.metrics_every == 0:
            await self._publish_metrics(trainer, offset)
        # A drift's notices come before the promotion the same event may have caused.
        notices = trainer.take_notices()
        for notice in notices:
            await self.outbox.notify(notice, version=serving)
        if promotion is None:
            return event.model, bool(notices)
        self._observe(trainer)
        await self.outbox.promote(promotion)
        return event.model, True

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
        await self._obey(model, trainer)
        return trainer

    async def _owner(self, tp: TP, model: str) -> int:
        while True:
            try:
                return await self.checkpoints.own(tp.topic, model, tp.partition)
            except REDIS_ERRORS as error:
                log.error("cannot record the owner of %s, Redis unavailable: %s", model, error)
                await asyncio.sleep(self.ledger.backoff())

    async def _dead_letter(
        self,
        state: PartitionState,
        message: Any,
        error: InvalidEvent,
        entry: RecordEntry | None = None,
    ) -> None:
        self.progress.dead_letter(error.code)
        if self.metrics is not None:
            self.metrics.dead_letter(error.code)
        await self.ledger.dead_letter(state, *dead_letter_of(message, error, entry))

    async def _publish_metrics(self, trainer: ModelTrainer, offset: int) -> None:
        # For dashboards and the demo: not part of the exactly-once state, so a replay after a
        # crash may publish a report twice (same model, same event count).
        summary = trainer.report()
        if self.metrics is not None:
            self.metrics.report(summary)
        report = {
            **summary,
            "offset": offset,
            "waiting_promotions": self.outbox.waiting,
            "events_since_checkpoint": self.ledger.since_checkpoint,
        }
        await self.outbox.send_untracked(
            self.config.topics.metrics,
            trainer.spec.name.encode(),
            orjson.dumps(report, option=orjson.OPT_NON_STR_KEYS),
        )

    def _observe(self, trainer: ModelTrainer) -> None:
        """Show Prometheus what serves now (a promotion, an adoption, a restore), without
        waiting for the next report."""
        if self.metrics is not None:
            self.metrics.report(trainer.report())


def _counting_promotions(metrics: TrainerMetrics) -> Callable[[ModelVersion], None]:
    """What the outbox calls with each record published: counts the versions, not notices."""

    def published(record: ModelVersion) -> None:
        if record.notice_sequence is None:
            metrics.promoted(record.model, record.kind.value)

    return published


def _first_time(state: PartitionState, source: str, seq: int) -> bool:
    """Whether a joined record is new: a scorer partition numbers its joins in order."""
    if seq <= state.sources.get(source, 0):
        return False
    state.sources[source] = seq
    return True


def create_app(
    config: DriftlineConfig,
    settings: Settings,
    *,
    reset_candidates: Collection[str] = frozenset(),
    metrics: TrainerMetrics | None = None,
) -> WorkerApp:
    """The trainer worker's faust app: one topic in, one agent, a checkpoint timer.

    With ``metrics``, the runtime counts into them and they watch the app's consumer.

    Raises :class:`~trainers.errors.ConfigError` for a ``reset_candidates`` entry that names no
    configured ``MODEL/NAME``. The topics are checked before, by the command that starts the
    worker (:func:`streams.admin.ensure_topics`: among others, training data whose records
    expire).
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
    durability = config.redis.wait
    send: Send = worker.send

    async def store_artifact(artifact: Artifact) -> None:
        await store(client, artifact, durability)

    async def holds_artifact(artifact: Artifact) -> bool:
        return bool(await client.exists(artifact.ref.key))

    async def load_artifact(record: ModelVersion) -> Any:
        # The follower verified the record's signature; the artifact is checked here, against
        # the record, before anything is unpickled.
        blob = await client.get(record.artifact.key)
        if not isinstance(blob, bytes):
            raise ArtifactIntegrityError(f"missing: no artifact under {record.artifact.key}")
        artifact = Artifact(blob, record.artifact)
        return artifact.load(model=record.model, version=record.version, key=signing_key)

    async def registry_records() -> list[ModelVersion]:
        return await asyncio.to_thread(
            lambda: list(read_registry(topics.registry, kafka, key=signing_key))
        )

    async def dead_letters(topic: str, partition: int, cursor: int, mark: int | None) -> Recall:
        return await asyncio.to_thread(
            read_dead_letters,
            topics.dlq,
            kafka,
            source_topic=topic,
            source_partition=partition,
            after=cursor,
            start=mark,
        )

    runtime = TrainingRuntime(
        config,
        checkpoints=RedisCheckpointStore(
            client,
            prefix=redis_prefix,
            group=config.worker.group,
            key=signing_key,
            durability=durability,
        ),
        outbox=Outbox(
            send=send,
            store_artifact=store_artifact,
            holds_artifact=holds_artifact,
            registry_topic=topics.registry,
            signing_key=signing_key,
            redis_prefix=redis_prefix,
            store_errors=REDIS_ERRORS,
            delivery_errors=KAFKA_ERRORS,
            on_published=None if metrics is None else _counting_promotions(metrics),
        ),
        consumer=worker,
        read_registry=registry_records,
        read_dead_letters=dead_letters,
        reset_candidates=reset,
        load_artifact=load_artifact,
        metrics=metrics,
    )
    if metrics is not None:
        metrics.watch_consumer(app)
        metrics.expect(config.models)
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
