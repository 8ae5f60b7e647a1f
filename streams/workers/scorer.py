"""The scoring worker: a faust app that scores unlabeled events with each model's serving version.

It consumes ``events.unlabeled`` and publishes, for each event, one prediction record to
``predictions`` (key: the model name; value: JSON, see :func:`encode_prediction`)::

    {"event_id": "e-1", "model": "sea", "version": 3, "prediction": true,
     "probabilities": {"false": 0.2, "true": 0.8}}

``probabilities`` is left out when the model gives none (regressors); ``prediction`` is null
while a model cannot predict yet. A model is served by the version of its last registry record
(see :mod:`streams.registry.records`), including an operator's promote or rollback.

Following the registry. A :class:`RegistryFollower` thread reads the registry topic from its
beginning and keeps a :class:`ServingTable` up to date: for each new record of a configured
model it fetches the artifact from Redis, checks its digest and signature and only then
unpickles it. An artifact that fails the check is logged as an error and the model keeps the
version it had. The agent reads the table once per event, so a swap falls between two events:
each event is scored by exactly one version, and no restart is needed. Scoring starts only once
the follower has read the registry as it was when the worker started, so a restarted worker
never scores with a version the registry had already superseded.

Events that are not scored go to the dead-letter topic (:func:`streams.contract.dead_letter_record`)
with a reason code:

- the contract's codes (``not_json``, ``missing_field``, ...) for a malformed event;
- ``unknown_model`` for a model the configuration does not declare;
- ``no_version`` for a configured model that has no servable version yet: its first such event
  waits up to ``max_wait`` seconds (default 30) for one to be published; once that wait has
  run out, its events go to the dead-letter topic at once until a version arrives. While an event
  waits, the worker's other events wait behind it (the agent keeps the source order);
- ``model_error`` when the model raises on the event.

Delivery: the stream does not acknowledge events itself; each event is acknowledged when the
broker has acknowledged (``acks=all``) its prediction or dead letter, so faust never commits an
offset whose output could still be lost (faust also flushes its producer before each commit).
In a run without failures each event is thus scored exactly once. After a crash or a lost
partition, the events after the last committed offset are scored again: predictions are
at-least-once, and a consumer that must not see duplicates keeps the last prediction per
``event_id``. A prediction the broker refuses leaves its event unacknowledged, which stops the
partition's commits there, so a restart scores it again rather than losing it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Hashable
from dataclasses import dataclass
from typing import Any

import orjson
from faust.types import EventT

from streams.config import DriftlineConfig
from streams.contract import InvalidEvent, ReasonCode, UnlabeledEvent, decode_unlabeled
from streams.registry.client import RegistryClient, RegistrySubscription
from streams.registry.records import ModelVersion, serving_records
from streams.settings import Settings
from streams.workers.app import WorkerApp, dead_letter_of
from streams.workers.logs import Progress
from trainers.candidates import Candidate
from trainers.errors import ArtifactIntegrityError

__all__ = [
    "DEFAULT_MAX_WAIT",
    "RegistryFollower",
    "ScoringRuntime",
    "Serving",
    "ServingTable",
    "create_app",
    "encode_prediction",
]

log = logging.getLogger("driftline.scorer")

DEFAULT_MAX_WAIT = 30.0
# How often a waiting event looks at the serving table again.
_WAIT_POLL_SECONDS = 0.05
_READY_WARNING_EVERY = 10.0

Send = Callable[[str, bytes, bytes], Awaitable["asyncio.Future[Any]"]]
"""Sends (topic, key, value); returns a future that resolves once the broker has the record."""


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
        self.ready = threading.Event()
        """Set once the registry has been read as it was when following started."""
        self.refused: dict[str, str] = {}
        """Per model, why its versions could not be verified (signed with another key)."""

    def get(self, model: str) -> Serving | None:
        """The serving version of ``model``, or None when it has none yet."""
        return self._entries.get(model)

    def put(self, serving: Serving) -> None:
        """Serve ``serving`` for its model from the next event on."""
        self._entries[serving.record.model] = serving


class RegistryFollower(threading.Thread):
    """Keeps a :class:`ServingTable` in step with the registry topic (see the module docstring).

    It never stops on bad data: a malformed record is skipped, an artifact that fails its checks
    is refused, and a broken connection is reopened (reading the registry again from its start).
    """

    def __init__(
        self,
        client: RegistryClient,
        table: ServingTable,
        models: Collection[str],
        *,
        poll_timeout: float = 0.5,
    ) -> None:
        super().__init__(name="driftline-registry-follower", daemon=True)
        self.client = client
        self.table = table
        self.models = frozenset(models)
        self.poll_timeout = poll_timeout
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
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
            self.table.refused.update(subscription.refused)
            if not self.table.ready.is_set() and subscription.caught_up:
                log.info("registry read up to its end; scoring can start")
                self.table.ready.set()

    def apply(self, records: list[ModelVersion]) -> None:
        """Serve what ``records`` (in log order) say, loading only what each model needs."""
        for model, last in serving_records(records).items():
            if model not in self.models:
                continue
            # Applying the records one by one would serve the last one whose artifact loads; so
            # try them from the last backwards and stop at the first that loads.
            for record in reversed([r for r in records if r.model == model]):
                if self._serve(record):
                    break
            serving = self.table.get(model)
            if serving is None or serving.record is not last:
                log.error("%s keeps serving its previous version", model)

    def _serve(self, record: ModelVersion) -> bool:
        current = self.table.get(record.model)
        if current is not None and current.record.artifact == record.artifact:
            # The very bytes and signature already verified, under a new record: no reload.
            self.table.put(Serving(record, current.model))
            return True
        try:
            model = self.client.load(record)
        except ArtifactIntegrityError as error:
            log.error("refusing %s v%d (%s): %s", record.model, record.version, record.kind, error)
            return False
        self.table.put(Serving(record, model))
        log.info(
            "%s: now serving v%d (%s: %s)", record.model, record.version, record.kind, record.reason
        )
        return True


def encode_prediction(
    event: UnlabeledEvent,
    version: int,
    prediction: Any,
    probabilities: dict[Hashable, float] | None,
) -> bytes:
    """The value of a prediction record (class keys such as ``True`` become JSON strings)."""
    value: dict[str, Any] = {
        "event_id": event.event_id,
        "model": event.model,
        "version": version,
        "prediction": prediction,
    }
    if probabilities is not None:
        value["probabilities"] = probabilities
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


class ScoringRuntime:
    """Everything the scoring agent does, apart from being a faust agent.

    Parameters
    ----------
    config
        The parsed configuration: which models to serve, the topics, the event size limit.
    table
        The serving versions, kept up to date by a :class:`RegistryFollower`.
    send
        Produces a record and gives back its delivery.
    max_wait
        Seconds a model without a version is waited for before its events are dead-lettered.
    """

    def __init__(
        self,
        config: DriftlineConfig,
        *,
        table: ServingTable,
        send: Send,
        max_wait: float = DEFAULT_MAX_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.table = table
        self.send = send
        self.max_wait = max_wait
        self.clock = clock
        # When each model without a version started waiting; its deadline is this + max_wait.
        self._waiting_since: dict[str, float] = {}
        self.progress = Progress(log, "scored")

    async def handle(self, event: EventT) -> None:
        """Score one record of the unlabeled-events topic (the agent's whole body)."""
        message = event.message
        await self._wait_until_ready()
        try:
            unlabeled = decode_unlabeled(
                message.value, max_bytes=self.config.worker.max_event_bytes
            )
            if unlabeled.model not in self.config.models:
                raise InvalidEvent(
                    ReasonCode.UNKNOWN_MODEL, f"model {unlabeled.model!r} is not configured"
                )
            serving = await self._serving(unlabeled.model)
            if serving is None and unlabeled.model in self.table.refused:
                raise InvalidEvent(
                    ReasonCode.UNVERIFIED_VERSION, self.table.refused[unlabeled.model]
                )
            if serving is None:
                raise InvalidEvent(
                    ReasonCode.NO_VERSION,
                    f"model {unlabeled.model!r} has no servable version after {self.max_wait:g} s",
                )
            value = self._score(unlabeled, serving)
        except InvalidEvent as error:
            delivery = await self._dead_letter(message, error)
        else:
            self.progress.handled()
            delivery = await self.send(
                self.config.topics.predictions, unlabeled.model.encode(), value
            )
        delivery.add_done_callback(lambda done: _ack_if_delivered(event, done))

    def _score(self, event: UnlabeledEvent, serving: Serving) -> bytes:
        try:
            prediction, probabilities = serving.model.predict_with_proba(event.features)
            return encode_prediction(event, serving.record.version, prediction, probabilities)
        except Exception as error:  # a model that fails on an event must not stop the worker
            log.exception(
                "%s v%d failed on %s", event.model, serving.record.version, event.event_id
            )
            raise InvalidEvent(
                ReasonCode.MODEL_ERROR, f"{type(error).__name__}: {error}"
            ) from error

    async def _wait_until_ready(self) -> None:
        # Unbounded on purpose: until the registry is read, "no version" would be a guess.
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

    async def _dead_letter(self, message: Any, error: InvalidEvent) -> asyncio.Future[Any]:
        self.progress.dead_letter(error.code)
        key, value = dead_letter_of(message, error)
        return await self.send(self.config.topics.dlq, key, value)


def _ack_if_delivered(event: EventT, delivery: asyncio.Future[Any]) -> None:
    if delivery.cancelled() or delivery.exception() is not None:
        message = event.message
        log.error(
            "output of %s[%d]@%d was not delivered (%s); it stays uncommitted",
            message.tp.topic,
            message.tp.partition,
            message.offset,
            "cancelled" if delivery.cancelled() else delivery.exception(),
        )
        return
    event.ack()


def create_app(
    config: DriftlineConfig,
    settings: Settings,
    *,
    max_wait: float = DEFAULT_MAX_WAIT,
    group: str | None = None,
) -> WorkerApp:
    """The scoring worker's faust app: one topic in, one agent, a registry follower thread.

    ``group`` (the consumer group) defaults to the trainer's group with ``-scorer`` appended.
    """
    topics = config.topics
    worker = WorkerApp(
        group or f"{config.worker.group}-scorer",
        config,
        settings.kafka,
        outputs=(topics.predictions, topics.dlq),
    )
    app = worker.app
    client = RegistryClient(
        topic=topics.registry, signing_key=settings.signing_key(), settings=settings
    )
    table = ServingTable()
    follower = RegistryFollower(client, table, config.models)
    runtime = ScoringRuntime(config, table=table, send=worker.send, max_wait=max_wait)

    worker.consume(topics.unlabeled, runtime.handle)

    @app.task
    async def follow_registry() -> None:
        follower.start()

    worker.on_shutdown(follower.stop)
    worker.every(config.worker.progress_interval, runtime.progress.log)

    return worker
