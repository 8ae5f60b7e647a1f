"""Producer SDK: send contract-checked events to driftline's Kafka topics.

Every event is validated against :mod:`streams.contract` before anything is sent, so an
invalid event raises :class:`~streams.contract.InvalidEvent` in the caller instead of
ending up in the dead-letter topic. Records are keyed by model name, which keeps each
model's events in one partition and therefore in order.

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from streams.closing import ClosedOnExit
from streams.contract import (
    Event,
    LabeledEvent,
    Outcome,
    UnlabeledEvent,
    encode_event,
    encode_outcome,
    validate_labeled,
    validate_outcome,
    validate_unlabeled,
)
from streams.settings import Settings, SettingsError

__all__ = [
    "DeliveryError",
    "DeliveryFailure",
    "EventProducer",
    "ProducerClosedError",
    "ProducerConfigError",
]

_DURABLE_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    # A few milliseconds of batching multiplies throughput at a negligible latency cost.
    "linger_ms": 5,
}
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


class EventProducer(ClosedOnExit):
    """Send labeled and unlabeled events, and outcomes, keyed by model name.

    Every parameter left out comes from ``settings`` (default: :meth:`Settings.from_env`): the
    Kafka connection with its security settings, and the topics. Given, ``bootstrap_servers``
    replaces the settings' connection, security included (pass that as keyword arguments).
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
        **kafka_config: Any,
    ) -> None:
        # Caught here rather than on the first send, where KafkaProducer would notice.
        unknown = sorted(set(kafka_config) - _KNOWN_KAFKA_CONFIG)
        if unknown:
            raise ProducerConfigError(f"unknown KafkaProducer settings: {', '.join(unknown)}")
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
        self._kafka_config = {**_DURABLE_DEFAULTS, **connection, **kafka_config}
        self._kafka: KafkaProducer | None = None
        self._closed = False
        self._failures: list[DeliveryFailure] = []
        # Delivery callbacks run on kafka-python's sender thread.
        self._failures_lock = threading.Lock()

    def send(self, event: Mapping[str, Any] | LabeledEvent) -> FutureRecordMetadata:
        """Validate ``event`` as labeled and send it; raises ``InvalidEvent`` before sending."""
        if not isinstance(event, LabeledEvent):
            event = validate_labeled(event)
        return self._send(self.topic, event)

    def send_unlabeled(self, event: Mapping[str, Any] | UnlabeledEvent) -> FutureRecordMetadata:
        """Validate ``event`` as unlabeled and send it to the unlabeled topic."""
        if not isinstance(event, UnlabeledEvent):
            event = validate_unlabeled(event)
        return self._send(self.unlabeled_topic, event)

    def send_outcome(self, outcome: Mapping[str, Any] | Outcome) -> FutureRecordMetadata:
        """Validate ``outcome`` (the label of an event sent unlabeled) and send it to the outcomes
        topic; raises ``InvalidEvent`` before sending."""
        if not isinstance(outcome, Outcome):
            outcome = validate_outcome(outcome)
        return self._send(self.outcomes_topic, outcome)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every sent event is acknowledged or failed.

        Raises :class:`DeliveryError` for the failures seen since the previous report
        (and ``kafka.errors.KafkaTimeoutError`` if ``timeout`` seconds pass first).
        """
        if self._kafka is not None:
            self._kafka.flush(timeout)
        self._raise_failures()

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is pending, release the connection, then report failures."""
        self._closed = True
        if self._kafka is not None:
            kafka, self._kafka = self._kafka, None
            kafka.close(timeout)
        self._raise_failures()

    def _send(self, topic: str, record: Event | Outcome) -> FutureRecordMetadata:
        if self._closed:
            raise ProducerClosedError("send after close()")
        if self._kafka is None:
            self._kafka = KafkaProducer(**self._kafka_config)
        value = encode_outcome(record) if isinstance(record, Outcome) else encode_event(record)
        future = self._kafka.send(topic, value=value, key=record.model.encode())
        future.add_errback(self._record_failure, topic, record.event_id)
        return future

    def _record_failure(self, topic: str, event_id: str, error: BaseException) -> None:
        with self._failures_lock:
            self._failures.append(DeliveryFailure(topic, event_id, error))

    def _raise_failures(self) -> None:
        with self._failures_lock:
            failures, self._failures = self._failures, []
        if failures:
            raise DeliveryError(failures)
