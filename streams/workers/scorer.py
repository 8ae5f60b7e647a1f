"""The scoring worker: scores unlabeled events with each model's serving versions, joins outcomes.

It consumes ``events.unlabeled`` and ``events.outcomes`` (both keyed by model, with as many
partitions, so a model's events and outcomes meet in one scorer) and publishes, for each event,
a prediction record to ``predictions`` (key: the model name)::

    {"event_id": "e-1", "model": "sea", "version": 3, "arm": "stable", "prediction": true,
     "probabilities": {"false": 0.2, "true": 0.8}}

Serving. A :class:`RegistryFollower` thread reads the registry topic from its beginning and keeps
a :class:`ServingTable`: per model, its stable version and the version on trial beside it, if any
(:func:`streams.registry.records.serving_state`). Each artifact is fetched from Redis, checked
(digest, signature) and only then unpickled; one that fails is refused, logged, and the model
keeps what it served. A missing artifact (Redis lost it) may come back, stored again with the
same digest: it is looked up again with a backoff (1 s, doubling up to 60 s), logged once, and
served once it is back. A swap falls between two events, with no restart, and scoring starts only
once the registry has been read as it was when the worker started. An event is served by the
stable version (arm ``stable``), or, for a canary, by the trial when a hash of its ``event_id``
falls in the canary's fraction (arm ``canary``: an event always gets the same arm); a shadow
scores every event beside the stable version (a second prediction, arm ``shadow``, never served).

A record of ``events.unlabeled`` holds one event or a batch of the record key's model's events
(a JSON array, as the producer SDK sends them by default: :mod:`streams.contract`); an event of a
batch that cannot be scored is dead-lettered alone, with its index, and its neighbours are
scored. Outcomes are single-event records.

Joining. What each message changes is committed by the :class:`~streams.workers.join.Joiner`
(the predictions kept until their outcomes, or the outcome until its event; the labeled event a
match makes; the live metrics), exactly once per record, and only then acknowledged. The live
boards' guardrail decisions become ``rollout``, ``rollback`` and ``alert`` registry records,
published once while they still apply (:meth:`ScoringRuntime.decided`): a Kafka error is tried
again until the broker takes the record (logged once per outage), the agent waiting meanwhile,
and a crash before that decides it again when the next owner replays the joins. **I10**: a
decision the registry already holds (same kind, model, versions and evidence: a replay of the same
joins from the same boards decides the same) is not published again; the follower has read the
registry up to its end as it was at start before anything is claimed, which covers a restart
after a crash (a peer's crash covered by its claim coming a session timeout later, while the
follower reads on).

Refused messages go to the dead-letter topic with a reason code: the contract's codes for a
malformed event or outcome; ``key_mismatch`` when the record key is not its model;
``unknown_model``; ``no_version`` for a configured model without a servable version after
``max_wait`` seconds (its first event waits that long, later ones are refused at once until a
version arrives); ``unverified_version`` when its versions are not signed with this scorer's
key; ``model_error`` when the model raises; ``no_prediction`` for an outcome whose event was
never scored within the model's label horizon.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from faust.types import TP, EventT

from streams.config import DriftlineConfig
from streams.contract import (
    InvalidEvent,
    ReasonCode,
    RecordEntry,
    UnlabeledEvent,
    decode_outcome,
    decode_unlabeled_record,
)
from streams.metrics import ScorerMetrics
from streams.registry.artifacts import ArtifactMissing
from streams.registry.client import RegistryClient, RegistrySubscription
from streams.registry.records import (
    INFORMATIONAL_KINDS,
    TRIAL_KINDS,
    ModelVersion,
    RecordKind,
    serving_state,
)
from streams.settings import Settings
from streams.workers.app import WorkerApp, dead_letter_of
from streams.workers.checkpoint import RedisCheckpointStore
from streams.workers.deadletters import Tail, read_since
from streams.workers.join import Joiner, Served, arm_of
from streams.workers.logs import Progress
from streams.workers.retry import KAFKA_ERRORS, RETRY_FIRST_SECONDS, until_done
from trainers.candidates import Candidate
from trainers.errors import ArtifactIntegrityError
from trainers.guardrail import ALERT, ROLLBACK, ROLLOUT, GuardDecision

__all__ = [
    "DEFAULT_MAX_WAIT",
    "RegistryFollower",
    "ScoringRuntime",
    "Serving",
    "ServingTable",
    "create_app",
]

log = logging.getLogger("driftline.scorer")

DEFAULT_MAX_WAIT = 30.0
# How often a waiting event looks at the serving table again.
_WAIT_POLL_SECONDS = 0.05
_READY_WARNING_EVERY = 10.0

# How often pending predictions and outcomes are checked against their horizon.
SWEEP_SECONDS = 1.0

# Seconds before a missing artifact is looked up again, doubling up to the second.
MISSING_RETRY_SECONDS = (1.0, 60.0)


@dataclass
class _Missing:
    """An artifact Redis did not hold: when to look it up again, after how long a wait."""

    due: float
    delay: float


@dataclass(frozen=True)
class Serving:
    """The version serving one model: its registry record and the loaded model."""

    record: ModelVersion
    model: Candidate


class ServingTable:
    """Which version serves each model: written by the follower thread, read by the agent.

    Each entry is replaced whole by one dict assignment, which is atomic in CPython, so the
    agent always sees a consistent (record, model) pair without taking a lock.
    """

    def __init__(self) -> None:
        self._entries: dict[str, Serving] = {}
        self._trials: dict[str, Serving | None] = {}
        self.ready = threading.Event()
        """Set once the registry has been read as it was when following started."""
        self.refused: dict[str, str] = {}
        """Per model, why its versions could not be verified (signed with another key)."""
        self.decisions: set[tuple[Any, ...]] = set()
        """The :func:`decision_of` every guardrail record read from the registry."""

    def get(self, model: str) -> Serving | None:
        """The stable version of ``model``, or None when it has none yet."""
        return self._entries.get(model)

    def put(self, serving: Serving) -> None:
        """Serve ``serving`` as its model's stable version from the next event on."""
        self._entries[serving.record.model] = serving

    def trial(self, model: str) -> Serving | None:
        """The version on trial beside the stable one (a canary or a shadow), if any."""
        return self._trials.get(model)

    def put_trial(self, model: str, serving: Serving | None) -> None:
        """Put ``serving`` on trial for ``model`` (None ends the trial)."""
        self._trials[model] = serving


def decision_of(record: ModelVersion) -> tuple[Any, ...]:
    """What tells a guardrail record from another: its kind, model, versions and evidence (a
    replay of the same joins from the same boards decides the same, with the same evidence;
    ``reason`` and ``created_at`` aside)."""
    evidence = orjson.loads(record.to_json())["evidence"]
    return (
        record.kind.value,
        record.model,
        record.version,
        record.previous_version,
        orjson.dumps(evidence, option=orjson.OPT_SORT_KEYS),
    )


class RegistryFollower(threading.Thread):
    """Keeps a :class:`ServingTable` in step with the registry topic (see the module docstring).

    It never stops on bad data: a malformed record is skipped, an artifact that fails its checks
    is refused, and a broken connection is reopened (reading the registry again from its start).
    A missing artifact is looked up again after ``retry`` seconds (first wait, longest wait),
    doubling, until it loads; ``clock`` times the waits.
    """

    def __init__(
        self,
        client: RegistryClient,
        table: ServingTable,
        models: Collection[str],
        *,
        poll_timeout: float = 0.5,
        metrics: ScorerMetrics | None = None,
        retry: tuple[float, float] = MISSING_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name="driftline-registry-follower", daemon=True)
        self.metrics = metrics
        self.client = client
        self.table = table
        self.models = frozenset(models)
        self.poll_timeout = poll_timeout
        self.records: list[ModelVersion] = []
        self.retry = retry
        self.clock = clock
        self._stopping = threading.Event()
        # Per artifact key, the missing artifacts wanted since the last retry.
        self._missing: dict[str, _Missing] = {}
        self._wanted: set[str] = set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.records = []  # read again from the beginning
                with self.client.subscribe(from_beginning=True) as subscription:
                    self._follow(subscription)
            except Exception:  # a broker or Redis outage must not end the thread
                log.exception("following the registry failed; starting over in 1 s")
                self._stopping.wait(1.0)

    def stop(self) -> None:
        """Ask the thread to finish (within one poll)."""
        self._stopping.set()

    def _follow(self, subscription: RegistrySubscription) -> None:
        while not self._stopping.is_set():
            records = subscription.poll(self.poll_timeout)
            if records:
                self.apply(records)
            else:
                self.retry_missing()
            self.table.refused.update(subscription.refused)
            if not self.table.ready.is_set() and subscription.caught_up:
                log.info("registry read up to its end; scoring can start")
                self.table.ready.set()

    def apply(self, records: list[ModelVersion]) -> None:
        """Serve what the registry (every record so far, in log order) says, loading only what
        changed; a version whose artifact fails its checks is refused and the model keeps what
        it served."""
        self.records.extend(records)
        self.table.decisions.update(
            decision_of(record) for record in records if record.operator == "guardrail"
        )
        for model, state in serving_state(self.records).items():
            if model not in self.models:
                continue
            if not self._serve(state.stable):
                # The newest earlier version that still loads serves (or what served before).
                earlier = [
                    record
                    for record in self.records
                    if record.model == model
                    and record.kind not in TRIAL_KINDS | INFORMATIONAL_KINDS
                    and record.version != state.stable.version
                ]
                served = any(self._serve(record) for record in reversed(earlier))
                # A missing artifact said so once already, and is retried: not at every retry.
                if not served and state.stable.artifact.key not in self._missing:
                    log.error("%s keeps serving its previous version", model)
            trial = self.table.trial(model)
            if state.trial is None:
                self.table.put_trial(model, None)
            elif trial is None or trial.record != state.trial:
                self.table.put_trial(model, self._load(state.trial, trial))

    def retry_missing(self) -> None:
        """Serve what the registry says again once a missing artifact's wait is over (see
        :meth:`_load`); forget the missing artifacts nothing wants any more."""
        now = self.clock()
        if all(missing.due > now for missing in self._missing.values()):
            return
        self._wanted.clear()
        self.apply([])
        for key in self._missing.keys() - self._wanted:
            del self._missing[key]

    def _load(self, record: ModelVersion, current: Serving | None) -> Serving | None:
        if current is not None and current.record.artifact == record.artifact:
            # The very bytes and signature already verified, under a new record: no reload.
            return Serving(record, current.model)
        key = record.artifact.key
        missing = self._missing.get(key)
        if missing is not None:
            self._wanted.add(key)
            if self.clock() < missing.due:
                return None
        try:
            model = self.client.load(record)
        except ArtifactMissing as error:
            self._missed(record, missing, error)
            return None
        except ArtifactIntegrityError as error:
            log.error("refusing %s v%d (%s): %s", record.model, record.version, record.kind, error)
            if self.metrics is not None:
                self.metrics.refused(record.model)
            return None
        log.info(
            "%s: v%d %s (%s: %s)",
            record.model,
            record.version,
            "on trial" if record.kind in TRIAL_KINDS else "now serving",
            record.kind,
            record.reason,
        )
        if missing is not None:
            del self._missing[key]
            log.info("%s v%d: its artifact is back in Redis", record.model, record.version)
        if self.metrics is not None:
            self.metrics.swapped(record.model, "trial" if record.kind in TRIAL_KINDS else "stable")
        return Serving(record, model)

    def _missed(self, record: ModelVersion, missing: _Missing | None, error: Exception) -> None:
        """Wait longer before looking up again an artifact still missing; log only the first
        time, so that a long loss is one line, not one per retry."""
        first, longest = self.retry
        if missing is not None:
            missing.delay = min(missing.delay * 2, longest)
            missing.due = self.clock() + missing.delay
            return
        self._missing[record.artifact.key] = _Missing(self.clock() + first, first)
        self._wanted.add(record.artifact.key)
        log.error(
            "refusing %s v%d (%s) until its artifact is back: %s; the model keeps what it "
            "served, and the artifact is looked up again after %g s, then ever less often (up "
            "to every %g s)",
            record.model,
            record.version,
            record.kind,
            error,
            first,
            longest,
        )
        if self.metrics is not None:
            self.metrics.refused(record.model)

    def _serve(self, record: ModelVersion) -> bool:
        current = self.table.get(record.model)
        if current is not None and current.record == record:
            return True
        serving = self._load(record, current)
        if serving is not None:
            self.table.put(serving)
        return serving is not None


@dataclass
class ScoringRuntime:
    """Everything the scoring agents do, apart from being faust agents.

    Parameters
    ----------
    config
        The parsed configuration: which models to serve, the topics, the event size limit.
    table
        The serving versions, kept up to date by a :class:`RegistryFollower`.
    joiner
        Commits what each message changes, joins outcomes to predictions, publishes.
    publish_record
        Publishes a registry record the live guardrail decided (signed by the caller), and
        waits for the broker's acknowledgement; a Kafka error (:data:`KAFKA_ERRORS`) is tried
        again until it succeeds.
    max_wait
        Seconds a model without a version is waited for before its events are dead-lettered.
    metrics
        Where the runtime counts for Prometheus; None counts nothing.
    """

    config: DriftlineConfig
    _: KW_ONLY
    table: ServingTable
    joiner: Joiner
    publish_record: Callable[[ModelVersion], Awaitable[None]]
    max_wait: float = DEFAULT_MAX_WAIT
    metrics: ScorerMetrics | None = None
    clock: Callable[[], float] = time.monotonic
    retry_first: float = RETRY_FIRST_SECONDS
    # When each model without a version started waiting; its deadline is this + max_wait.
    _waiting_since: dict[str, float] = field(default_factory=dict, init=False)
    _decided: set[tuple[str, str, int]] = field(default_factory=set, init=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    progress: Progress = field(default_factory=lambda: Progress(log, "scored"), init=False)

    async def handle(self, event: EventT) -> None:
        """Score one record of the unlabeled-events topic, an event or a batch (its agent's
        whole body)."""
        started = time.perf_counter()
        if await self._commit(event, self._commit_scored) and self.metrics is not None:
            self.metrics.acknowledged(time.perf_counter() - started)

    async def handle_outcome(self, event: EventT) -> None:
        """Join one record of the outcomes topic (its agent's whole body)."""
        await self._commit(event, self._commit_outcome)

    async def _commit(self, event: EventT, commit: Callable[[Any, Any], Awaitable[bool]]) -> bool:
        """Skip a message already handled, else commit what it changes; ack once committed.

        True when the message was committed and acknowledged now."""
        message = event.message
        await self.wait_until_ready()
        async with self.lock:
            state = await self.joiner.owned(message.tp.partition)
            if state is None:
                return False
            if self.joiner.skips(state, message.tp.topic, message.offset):
                event.ack()
                if self.metrics is not None:
                    self.metrics.skipped("replayed")
                return False
            try:
                committed = await commit(state, message)
            except InvalidEvent as error:  # the whole record
                committed = await self.joiner.dead_letter(
                    state,
                    message.tp.partition,
                    message.tp.topic,
                    message.offset,
                    self._dead_letter(message, error),
                )
            if committed:
                event.ack()
            return committed

    async def _commit_scored(self, state: Any, message: Any) -> bool:
        entries = decode_unlabeled_record(
            message.value, max_bytes=self.config.worker.max_event_bytes
        )
        served: list[Served] = []
        dead_letters: list[tuple[bytes, bytes]] = []
        for entry in entries:
            try:
                served.append(await self._score(entry, message.key))
            except InvalidEvent as error:
                dead_letters.append(self._dead_letter(message, error, entry))
        self.progress.handled(len(served))
        committed = await self.joiner.served(
            state, message.tp.partition, message.offset, served, dead_letters
        )
        if committed and self.metrics is not None:
            for each in served:
                for prediction in each.predictions:
                    self.metrics.predicted(
                        each.event.model, prediction["version"], prediction["arm"]
                    )
        return committed

    def _dead_letter(
        self,
        message: Any,
        error: InvalidEvent,
        entry: RecordEntry[UnlabeledEvent] | None = None,
    ) -> tuple[bytes, bytes]:
        """Count a refusal; the dead letter of the record, or of its one event ``entry``."""
        self.progress.dead_letter(error.code)
        if self.metrics is not None:
            self.metrics.dead_letter(error.code)
        return dead_letter_of(message, error, entry)

    async def _commit_outcome(self, state: Any, message: Any) -> bool:
        outcome = decode_outcome(message.value, max_bytes=self.config.worker.max_event_bytes)
        self._check_model(outcome.model, message.key)
        return await self.joiner.outcome(
            state, message.tp.partition, message.offset, outcome, message.value or b""
        )

    def _check_model(self, model: str, key: bytes | None) -> None:
        if model not in self.config.models:
            raise InvalidEvent(ReasonCode.UNKNOWN_MODEL, f"model {model!r} is not configured")
        if key != model.encode():
            # Events and outcomes meet in the partition their key hashes to.
            raise InvalidEvent(
                ReasonCode.KEY_MISMATCH, f"record key {key!r} is not the model {model!r}"
            )

    async def _score(self, entry: RecordEntry[UnlabeledEvent], key: bytes | None) -> Served:
        """The predictions of one event of a record keyed ``key``; raises :class:`InvalidEvent`
        when it cannot be scored."""
        event = entry.decoded
        if isinstance(event, InvalidEvent):
            raise event
        self._check_model(event.model, key)
        serving = await self._serving(event.model)
        if serving is None and event.model in self.table.refused:
            raise InvalidEvent(ReasonCode.UNVERIFIED_VERSION, self.table.refused[event.model])
        if serving is None:
            raise InvalidEvent(
                ReasonCode.NO_VERSION,
                f"model {event.model!r} has no servable version after {self.max_wait:g} s",
            )
        trial = self.table.trial(event.model)
        context = {
            "stable": serving.record.version,
            "trial": trial.record.version if trial else None,
            "trial_arm": trial.record.kind.value if trial else None,
            "reference": _reference_level(serving.record),
        }
        if trial is None:
            arms = [(serving, "stable")]
        elif trial.record.kind is RecordKind.SHADOW:
            arms = [(serving, "stable"), (trial, "shadow")]
        elif (
            arm_of(event.event_id, float((trial.record.rollout or {}).get("fraction", 0)))
            == "canary"
        ):
            arms = [(trial, "canary")]
        else:
            arms = [(serving, "stable")]
        return Served(event, [self._predict(event, s, arm, context) for s, arm in arms])

    def _predict(
        self, event: UnlabeledEvent, serving: Serving, arm: str, context: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            prediction, probabilities = serving.model.predict_with_proba(event.features)
        except Exception as error:  # a model that fails on an event must not stop the worker
            # Counted in the progress line with the other dead letters; the trace is for debug.
            log.debug("%s v%d failed", event.model, serving.record.version, exc_info=True)
            reason = f"{type(error).__name__}: {error}"
            raise InvalidEvent(ReasonCode.MODEL_ERROR, reason) from error
        return {
            "version": serving.record.version,
            "arm": arm,
            "prediction": _plain(prediction),
            "probabilities": None
            if probabilities is None
            else [[_plain(cls), float(p)] for cls, p in probabilities.items()],
            "serving": context,
        }

    async def decided(self, model: str, decision: GuardDecision) -> None:
        """Publish what the live guardrail decided, once, while it still applies."""
        serving, trial = self.table.get(model), self.table.trial(model)
        evidence = decision.evidence
        if decision.kind == ROLLOUT and trial is not None:
            if trial.record.version != evidence.get("trial_version"):
                return
            target, previous, kind = (
                trial.record,
                evidence.get("stable_version"),
                RecordKind.ROLLOUT,
            )
        elif decision.kind == ROLLBACK and serving is not None:
            if trial is None or trial.record.version != evidence.get("trial_version"):
                return
            target, previous, kind = serving.record, trial.record.version, RecordKind.ROLLBACK
        elif decision.kind == ALERT and serving is not None:
            if serving.record.version != evidence.get("stable_version"):
                return
            target, previous, kind = serving.record, serving.record.version, RecordKind.ALERT
        else:
            return
        if (kind, model, target.version) in self._decided:
            return
        record = dataclasses.replace(
            target,
            kind=kind,
            previous_version=previous,
            reason=decision.reason,
            evidence=evidence,
            operator="guardrail",
            rollout=None,
            created_at=datetime.now(UTC).isoformat(),
            signature=None,
        )
        self._decided.add((kind, model, target.version))
        if decision_of(record) in self.table.decisions:
            # A replay after a crash decided again what the registry holds already (I10).
            log.info("%s: %s of v%d is in the registry already", model, kind.value, target.version)
            return
        log.warning("%s: %s of v%d: %s", model, kind.value, target.version, decision.reason)
        # Kafka away: the agent waits (its message is committed, and acknowledged only after
        # this), never crashes; a crash meanwhile decides it again at the claim's replay.
        await until_done(
            lambda: self.publish_record(record),
            what=f"publishing the {kind.value} of {model} v{target.version}",
            log=log,
            errors=KAFKA_ERRORS,
            first=self.retry_first,
        )
        if self.metrics is not None:
            self.metrics.decided(model, kind.value)

    async def wait_until_ready(self) -> None:
        """Until the registry is read as it was at start: unbounded on purpose, since "no
        version" before that would be a guess."""
        waited = 0.0
        while not self.table.ready.is_set():
            await asyncio.sleep(_WAIT_POLL_SECONDS)
            waited += _WAIT_POLL_SECONDS
            if waited >= _READY_WARNING_EVERY:
                log.warning("still reading the registry before scoring")
                waited = 0.0

    async def _serving(self, model: str) -> Serving | None:
        serving = self.table.get(model)
        if serving is None:
            deadline = self._waiting_since.setdefault(model, self.clock()) + self.max_wait
            while serving is None and self.clock() < deadline:
                await asyncio.sleep(_WAIT_POLL_SECONDS)
                serving = self.table.get(model)
        if serving is not None:
            self._waiting_since.pop(model, None)
        return serving


def _backlog(app: Any, partition: int, cursors: dict[str, int]) -> bool:
    """Whether the consumer knows of messages past ``cursors`` (per topic) in ``partition``."""
    for topic, cursor in cursors.items():
        end = app.consumer.highwater(TP(topic, partition))
        if end is not None and cursor + 1 < end:
            return True
    return False


def _fraction(record: ModelVersion) -> float:
    return float((record.rollout or {}).get("fraction", 0.0))


def _reference_level(record: ModelVersion) -> float | None:
    """The level a stable version showed at promotion, in the units its monitor takes."""
    evidence = record.evidence
    if evidence.get("metric") in ("accuracy", "mae"):
        level = evidence.get("challenger_metric")
        return float(level) if isinstance(level, int | float) else None
    return None


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python scalar JSON and labels compare with."""
    return value.item() if hasattr(value, "item") else value


def create_app(
    config: DriftlineConfig,
    settings: Settings,
    *,
    max_wait: float = DEFAULT_MAX_WAIT,
    group: str | None = None,
    metrics: ScorerMetrics | None = None,
) -> WorkerApp:
    """The scoring worker's faust app: events and outcomes in, a registry follower thread.

    ``group`` (the consumer group) defaults to the trainer's group with ``-scorer`` appended.
    With ``metrics``, the runtime and the follower count into them, and they watch the app's
    consumer, the serving table and the join.
    """
    topics = config.topics
    group = group or f"{config.worker.group}-scorer"
    key = settings.signing_key()
    worker = WorkerApp(
        group,
        config,
        settings.kafka,
        outputs=(topics.predictions, topics.dlq, topics.labeled, topics.registry, topics.metrics),
    )
    app = worker.app
    client = RegistryClient(topic=topics.registry, signing_key=key, settings=settings)
    table = ServingTable()
    follower = RegistryFollower(client, table, config.models, metrics=metrics)
    # Timeouts, so that a Redis that hangs is an error to retry, not a stalled worker.
    redis_client = aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=5, socket_connect_timeout=5
    )

    async def publish_record(record: ModelVersion) -> None:
        await (
            await worker.send(topics.registry, record.model.encode(), record.signed(key).to_json())
        )

    async def decided(model: str, decision: GuardDecision) -> None:
        await runtime.decided(model, decision)

    async def recall(starts: Mapping[tuple[str, int], int]) -> Tail:
        return await asyncio.to_thread(
            read_since, settings.kafka, (topics.dlq, topics.predictions), starts
        )

    joiner = Joiner(
        redis_client,
        checkpoints=RedisCheckpointStore(
            redis_client,
            prefix=settings.redis_prefix,
            group=group,
            key=key,
            durability=config.redis.wait,
        ),
        specs=config.models,
        topics=topics,
        send=worker.send,
        prefix=settings.redis_prefix,
        group=group,
        on_decision=decided,
        recall=recall,
        backlog=lambda partition, cursors: _backlog(app, partition, cursors),
    )
    runtime = ScoringRuntime(
        config,
        table=table,
        joiner=joiner,
        publish_record=publish_record,
        max_wait=max_wait,
        metrics=metrics,
    )
    worker.consume(topics.unlabeled, runtime.handle)
    worker.consume(topics.outcomes, runtime.handle_outcome)

    @app.task
    async def follow_registry() -> None:
        follower.start()

    async def checkpoint() -> None:
        async with runtime.lock:
            await joiner.checkpoint()

    async def sweep() -> None:
        async with runtime.lock:
            await joiner.sweep()

    async def report() -> None:
        reports = joiner.reports()
        if metrics is not None:
            metrics.live(reports, await joiner.pending())
        for live in reports:
            await worker.send(topics.metrics, live["model"].encode(), orjson.dumps(live))

    def serving() -> Iterator[tuple[str, str, int]]:
        for model in config.models:
            stable, trial = table.get(model), table.trial(model)
            if stable is not None:
                yield model, "stable", stable.record.version
            if trial is not None:
                yield model, trial.record.kind.value, trial.record.version

    if metrics is not None:
        metrics.watch_consumer(app)
        metrics.expect(config.models)
        metrics.watch_serving(serving)

    claims: set[asyncio.Future[None]] = set()

    async def revoked(tps: set[TP]) -> None:
        async with runtime.lock:
            await joiner.checkpoint()
            joiner.release({tp.partition for tp in tps})

    async def claim(partitions: set[int]) -> None:
        await runtime.wait_until_ready()
        async with runtime.lock:
            for partition in sorted(partitions):
                try:
                    await joiner.owned(partition)
                except Exception as error:  # Redis away: the partition's next message claims it
                    log.warning("joins of partition %d not claimed yet: %s", partition, error)

    def assigned(tps: set[TP]) -> None:
        partitions = {tp.partition for tp in tps if tp.topic == topics.unlabeled}
        joiner.assigned(partitions)
        # Claimed now, not at their next message: an idle partition still publishes what its
        # outbox holds and reports its live metrics.
        claims.add(asyncio.ensure_future(claim(partitions)))
        claims.difference_update({task for task in claims if task.done()})

    worker.on_rebalance(revoked=revoked, assigned=assigned)
    worker.every(config.worker.checkpoint_interval, checkpoint)
    worker.every(SWEEP_SECONDS, sweep)
    worker.every(config.worker.metrics_interval, report)
    worker.on_shutdown(follower.stop)
    worker.every(config.worker.progress_interval, runtime.progress.log)
    return worker
