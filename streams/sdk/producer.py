"""Producer SDK: send contract-checked events to driftline's Kafka topics.

Every event is validated against :mod:`streams.contract` before anything is sent, so an
invalid event raises :class:`~streams.contract.InvalidEvent` in the caller instead of
ending up in the dead-letter topic. Records are keyed by model name, which keeps each
model's events in one partition and therefore in order.

Labeled events and events to score are sent in **batch records** by default
(:func:`streams.contract.encode_batch`): each model's events to one topic are gathered for at
most ``batch_linger`` seconds, ``batch_events`` events or ``batch_bytes`` bytes, whichever comes
first, and sent as one record, so a trainer or scoring worker pays its per-record costs once per
batch (``bench/throughput.py`` measures what it buys). A batch of one event is sent as the plain
event. ``batch_events=1`` sends every event as a record of its own, as kcat does. Outcomes are
always single records.

Delivery is durable by default (``acks="all"``, idempotence on). Failures reported by
Kafka in the background are collected and raised as :class:`DeliveryError` by
:meth:`EventProducer.flush` and :meth:`EventProducer.close`; they are never dropped.

The connection comes from the deployment's :class:`~streams.settings.Settings`, as for the
workers and the registry client: ``KAFKA_BOOTSTRAP_SERVERS`` and every ``KAFKA_SECURITY_*``,
``KAFKA_SASL_*`` and ``KAFKA_SSL_*`` setting, unless the caller names the bootstrap servers.

The underlying ``KafkaProducer`` connects on the first send, so constructing an
:class:`EventProducer` does no network I/O.

Outcomes (:meth:`EventProducer.send_outcome`), the labels of events scored earlier, travel the
same way: validated first, keyed by model (the scorer joins an outcome to its prediction within
the model's partition), with the same delivery guarantees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaProducer
from kafka.future import Future

from streams.closing import ClosedOnExit
from streams.contract import (
    Event,
    LabeledEvent,
    Outcome,
    UnlabeledEvent,
    encode_batch,
    encode_event,
    encode_outcome,
    validate_labeled,
    validate_outcome,
    validate_unlabeled,
)
from streams.settings import Settings, SettingsError, producer_options

__all__ = [
    "DeliveryError",
    "DeliveryFailure",
    "EventProducer",
    "ProducerClosedError",
    "ProducerConfigError",
]

# A few milliseconds of batching multiplies throughput at a negligible latency cost.
_LINGER_MS = 5
DEFAULT_BATCH_EVENTS = 500
DEFAULT_BATCH_BYTES = 512 * 1024
"""Half of Kafka's default largest record (1 MiB), and of the worker's ``max_event_bytes``."""
DEFAULT_BATCH_LINGER = 0.005
_KNOWN_KAFKA_CONFIG = frozenset(KafkaProducer.DEFAULT_CONFIG) | frozenset(
    KafkaProducer.DEPRECATED_CONFIGS
)


class ProducerConfigError(ValueError):
    """The producer cannot be configured: no bootstrap servers, a bad setting in the
    environment, or unknown Kafka settings."""


class ProducerClosedError(RuntimeError):
    """The producer was closed; create a new one to send more events."""


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """One record Kafka did not accept."""

    topic: str
    event_id: str
    error: BaseException


class DeliveryError(RuntimeError):
    """Some sent events were not delivered; ``failures`` lists each of them."""

    def __init__(self, failures: list[DeliveryFailure]) -> None:
        first = failures[0]
        super().__init__(
            f"{len(failures)} event(s) not delivered; first: {first.event_id!r} "
            f"to {first.topic}: {first.error!r}"
        )
        self.failures = failures


@dataclass
class _Batch:
    """The events of one model to one topic waiting to be sent as one record."""

    started: float
    values: list[bytes] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    size: int = 0
    delivered: Future = field(default_factory=Future)


class EventProducer(ClosedOnExit):
    """Send labeled and unlabeled events, and outcomes, keyed by model name.

    Every parameter left out comes from ``settings`` (default: :meth:`Settings.from_env`): the
    Kafka connection with its security settings, and the topics. Given, ``bootstrap_servers``
    replaces the settings' connection, security included (pass that as keyword arguments).
    ``batch_events``, ``batch_bytes`` and ``batch_linger`` (seconds) bound a batch record of
    labeled or unlabeled events (see the module docstring); ``batch_events=1`` sends
    single-event records.
    Extra keyword arguments are ``KafkaProducer`` settings (``security_protocol``, ``sasl_*``,
    ``ssl_*``, ``linger_ms``...) and override the settings' and the durable defaults.
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        topic: str | None = None,
        unlabeled_topic: str | None = None,
        outcomes_topic: str | None = None,
        settings: Settings | None = None,
        batch_events: int = DEFAULT_BATCH_EVENTS,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        batch_linger: float = DEFAULT_BATCH_LINGER,
        **kafka_config: Any,
    ) -> None:
        # Caught here rather than on the first send, where KafkaProducer would notice.
        unknown = sorted(set(kafka_config) - _KNOWN_KAFKA_CONFIG)
        if unknown:
            raise ProducerConfigError(f"unknown KafkaProducer settings: {', '.join(unknown)}")
        if batch_events < 1 or batch_bytes < 1 or batch_linger < 0:
            raise ProducerConfigError(
                "batch_events and batch_bytes must be positive and batch_linger not negative"
            )
        try:
            settings = Settings.from_env() if settings is None else settings
            connection = (
                settings.kafka
                if bootstrap_servers is None
                else {"bootstrap_servers": bootstrap_servers}
            )
        except SettingsError as error:
            raise ProducerConfigError(str(error)) from error
        self.topic = topic or settings.topics.labeled
        self.unlabeled_topic = unlabeled_topic or settings.topics.unlabeled
        self.outcomes_topic = outcomes_topic or settings.topics.outcomes
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.batch_linger = batch_linger
        self._kafka_config = producer_options(connection, linger_ms=_LINGER_MS) | kafka_config
        self._kafka: KafkaProducer | None = None
        self._closed = False
        self._failures: list[DeliveryFailure] = []
        # Delivery callbacks run on kafka-python's sender thread.
        self._failures_lock = threading.Lock()
        # Per (topic, model): filled by the caller's thread and sent by it or, once they linger,
        # by the lingerer's.
        self._batches: dict[tuple[str, str], _Batch] = {}
        self._batches_lock = threading.Lock()
        self._lingerer: threading.Thread | None = None
        self._stop_lingering = threading.Event()

    def send(self, event: Mapping[str, Any] | LabeledEvent) -> Future:
        """Validate ``event`` as labeled and send it; raises ``InvalidEvent`` before sending.

        The future resolves once the record holding the event (its batch) is acknowledged.
        """
        if not isinstance(event, LabeledEvent):
            event = validate_labeled(event)
        return self._send_event(self.topic, event)

    def send_unlabeled(self, event: Mapping[str, Any] | UnlabeledEvent) -> Future:
        """Validate ``event`` as unlabeled and send it to the unlabeled topic, batched as
        :meth:`send` batches; raises ``InvalidEvent`` before sending."""
        if not isinstance(event, UnlabeledEvent):
            event = validate_unlabeled(event)
        return self._send_event(self.unlabeled_topic, event)

    def send_outcome(self, outcome: Mapping[str, Any] | Outcome) -> Future:
        """Validate ``outcome`` (the label of an event sent unlabeled) and send it to the outcomes
        topic; raises ``InvalidEvent`` before sending."""
        if not isinstance(outcome, Outcome):
            outcome = validate_outcome(outcome)
        return self._send(self.outcomes_topic, outcome)

    def flush(self, timeout: float | None = None) -> None:
        """Send every batch, then wait until every sent event is acknowledged or failed.

        Raises :class:`DeliveryError` for the failures seen since the previous report
        (and ``kafka.errors.KafkaTimeoutError`` if ``timeout`` seconds pass first).
        """
        self._send_batches(lingering_since=None)
        if self._kafka is not None:
            self._kafka.flush(timeout)
        self._raise_failures()

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is pending, release the connection, then report failures."""
        self._stop_lingering.set()
        if self._lingerer is not None:
            self._lingerer.join()
        if not self._closed:
            self._send_batches(lingering_since=None)
        self._closed = True
        if self._kafka is not None:
            kafka, self._kafka = self._kafka, None
            kafka.close(timeout)
        self._raise_failures()

    def _producer(self) -> KafkaProducer:
        if self._closed:
            raise ProducerClosedError("send after close()")
        if self._kafka is None:
            self._kafka = KafkaProducer(**self._kafka_config)
        return self._kafka

    def _send(self, topic: str, record: Event | Outcome) -> Future:
        value = encode_outcome(record) if isinstance(record, Outcome) else encode_event(record)
        future = self._producer().send(topic, value=value, key=record.model.encode())
        future.add_errback(self._record_failures, topic, [record.event_id])
        return future

    def _send_event(self, topic: str, event: Event) -> Future:
        if self.batch_events == 1:
            return self._send(topic, event)
        return self._add_to_batch(topic, event)

    def _add_to_batch(self, topic: str, event: Event) -> Future:
        self._producer()
        value = encode_event(event)
        pending = (topic, event.model)
        with self._batches_lock:
            batch = self._batches.get(pending)
            if batch is not None and batch.size + len(value) + 1 > self.batch_bytes:
                self._send_batch(pending, self._batches.pop(pending))
                batch = None
            if batch is None:
                batch = self._batches[pending] = _Batch(time.monotonic())
            batch.values.append(value)
            batch.event_ids.append(event.event_id)
            batch.size += len(value) + 1
            if len(batch.values) >= self.batch_events:
                self._send_batch(pending, self._batches.pop(pending))
        if self._lingerer is None:
            self._lingerer = threading.Thread(
                target=self._linger, name="driftline-producer-linger", daemon=True
            )
            self._lingerer.start()
        return batch.delivered

    def _linger(self) -> None:
        """Send the batches that have waited ``batch_linger`` seconds, until closed."""
        while not self._stop_lingering.wait(self.batch_linger or DEFAULT_BATCH_LINGER):
            self._send_batches(lingering_since=time.monotonic() - self.batch_linger)

    def _send_batches(self, *, lingering_since: float | None) -> None:
        """Send the batches started before ``lingering_since`` (None: every batch)."""
        with self._batches_lock:
            due = [
                pending
                for pending, batch in self._batches.items()
                if lingering_since is None or batch.started <= lingering_since
            ]
            for pending in due:
                self._send_batch(pending, self._batches.pop(pending))

    def _send_batch(self, pending: tuple[str, str], batch: _Batch) -> None:
        topic, model = pending
        # One event goes as itself: a batch record only when there is a batch.
        value = batch.values[0] if len(batch.values) == 1 else encode_batch(batch.values)
        try:
            sent = self._producer().send(topic, value=value, key=model.encode())
        # On the lingerer's thread nobody would see it: reported by flush() and close() instead.
        except Exception as error:
            self._record_failures(topic, batch.event_ids, error)
            batch.delivered.failure(error)
            return
        sent.add_callback(batch.delivered.success)
        sent.add_errback(self._record_failures, topic, batch.event_ids)
        sent.add_errback(batch.delivered.failure)

    def _record_failures(self, topic: str, event_ids: list[str], error: BaseException) -> None:
        with self._failures_lock:
            self._failures.extend(DeliveryFailure(topic, event_id, error) for event_id in event_ids)

    def _raise_failures(self) -> None:
        with self._failures_lock:
            failures, self._failures = self._failures, []
        if failures:
            raise DeliveryError(failures)
