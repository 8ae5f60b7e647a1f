"""Unit tests of the producer SDK, with kafka-python's KafkaProducer replaced by a fake."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
import pytest
from kafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from kafka.future import Future

import streams.sdk.producer as producer_module
from streams.contract import InvalidEvent, Outcome, decode_labeled, decode_outcome, decode_unlabeled
from streams.registry.client import RegistryClient
from streams.sdk.producer import (
    DeliveryError,
    EventProducer,
    ProducerClosedError,
    ProducerConfigError,
)


class FakeKafkaProducer:
    """Records sends; each future stays pending until flush() settles it."""

    instances: ClassVar[list[FakeKafkaProducer]] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.pending: list[Future] = []
        self.fail_with: Exception | None = None
        self.closed = False
        FakeKafkaProducer.instances.append(self)

    def send(self, topic: str, value: bytes, key: bytes) -> Future:
        self.sent.append((topic, key, value))
        future = Future()
        self.pending.append(future)
        return future

    def flush(self, timeout: float | None = None) -> None:
        for future in self.pending:
            if self.fail_with is None:
                future.success("metadata")
            else:
                future.failure(self.fail_with)
        self.pending = []

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)
        self.closed = True


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> type[FakeKafkaProducer]:
    FakeKafkaProducer.instances = []
    monkeypatch.setattr(producer_module, "KafkaProducer", FakeKafkaProducer)
    monkeypatch.delenv("DRIFTLINE_TOPIC_PREFIX", raising=False)
    return FakeKafkaProducer


def event(event_id: str = "e-1", **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "model": "churn",
        "ts": 1_718_000_000,
        "features": {"a": 1.5},
        "label": "yes",
    } | overrides


def test_invalid_event_raises_before_any_network_use() -> None:
    # Real KafkaProducer, unreachable broker: only a lazy connection lets this pass fast.
    producer = EventProducer("127.0.0.1:1")
    with pytest.raises(InvalidEvent) as caught:
        producer.send(event(features={"a": float("nan")}))
    assert caught.value.code == "non_finite"
    with pytest.raises(InvalidEvent):
        producer.send_unlabeled(event(model=""))
    producer.close()


def test_invalid_event_is_not_sent(fake_kafka: type[FakeKafkaProducer]) -> None:
    producer = EventProducer("broker:9092")
    producer.send(event("ok"))
    with pytest.raises(InvalidEvent):
        producer.send(event("bad", label=None))
    producer.flush()
    assert [orjson.loads(value)["event_id"] for _, _, value in fake_kafka.instances[0].sent] == [
        "ok"
    ]


def test_sends_keyed_by_model_with_durable_defaults(fake_kafka: type[FakeKafkaProducer]) -> None:
    with EventProducer("broker:9092", security_protocol="SSL", linger_ms=20) as producer:
        producer.send(event())
        producer.flush()
        producer.send_unlabeled(event("u-1", model="fraud"))
    kafka = fake_kafka.instances[0]
    assert kafka.config["acks"] == "all"
    assert kafka.config["enable_idempotence"] is True
    assert kafka.config["linger_ms"] == 20
    assert kafka.config["security_protocol"] == "SSL"
    assert kafka.config["bootstrap_servers"] == "broker:9092"
    (labeled_topic, labeled_key, labeled_value), (unlabeled_topic, unlabeled_key, raw) = kafka.sent
    assert (labeled_topic, labeled_key) == ("driftline.events.labeled", b"churn")
    assert decode_labeled(labeled_value).label == "yes"
    assert (unlabeled_topic, unlabeled_key) == ("driftline.events.unlabeled", b"fraud")
    assert decode_unlabeled(raw).event_id == "u-1"
    assert kafka.closed


def test_topics_follow_prefix_and_arguments(
    fake_kafka: type[FakeKafkaProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLINE_TOPIC_PREFIX", "staging.")
    assert EventProducer("b:1").topic == "staging.events.labeled"
    assert EventProducer("b:1").unlabeled_topic == "staging.events.unlabeled"
    assert EventProducer("b:1", topic="mine").topic == "mine"


def test_bootstrap_servers_default_to_environment(
    fake_kafka: type[FakeKafkaProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env-broker:9092")
    EventProducer().send(event())
    assert fake_kafka.instances[0].config["bootstrap_servers"] == "env-broker:9092"
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")
    with pytest.raises(ProducerConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        EventProducer()


def test_security_settings_come_from_the_environment_as_for_the_registry_client(
    fake_kafka: type[FakeKafkaProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    security = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_PLAIN_USERNAME": "alice",
        "KAFKA_SASL_PLAIN_PASSWORD": "s3cret",
        "KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem",
        "KAFKA_SSL_CHECK_HOSTNAME": "false",
    }
    for name, value in {"KAFKA_BOOTSTRAP_SERVERS": "env-broker:9093", **security}.items():
        monkeypatch.setenv(name, value)
    expected = {
        "bootstrap_servers": "env-broker:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/kafka/ca.pem",
        "ssl_check_hostname": False,
    }
    with EventProducer(linger_ms=20) as producer:
        producer.send(event())
    config = fake_kafka.instances[0].config
    assert {name: config[name] for name in expected} == expected
    assert (config["acks"], config["linger_ms"]) == ("all", 20)
    # The registry client reads the same settings.
    assert RegistryClient().kafka == expected


def test_named_bootstrap_servers_replace_the_environments_connection(
    fake_kafka: type[FakeKafkaProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env-broker:9093")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    EventProducer("named:9092").send(event())
    config = fake_kafka.instances[0].config
    assert config["bootstrap_servers"] == "named:9092"
    assert "security_protocol" not in config


def test_unknown_kafka_settings_are_rejected_up_front() -> None:
    with pytest.raises(ProducerConfigError, match="sasl_pasword"):
        EventProducer("b:1", sasl_pasword="typo")


def test_flush_raises_delivery_failures_once(fake_kafka: type[FakeKafkaProducer]) -> None:
    producer = EventProducer("broker:9092")
    producer.send(event("a"))
    producer.send(event("b"))
    fake_kafka.instances[0].fail_with = NotLeaderForPartitionError()
    with pytest.raises(DeliveryError) as caught:
        producer.flush()
    assert [failure.event_id for failure in caught.value.failures] == ["a", "b"]
    assert all(isinstance(f.error, NotLeaderForPartitionError) for f in caught.value.failures)
    assert caught.value.failures[0].topic == "driftline.events.labeled"
    producer.flush()  # already reported


def test_close_reports_failures_and_refuses_further_sends(
    fake_kafka: type[FakeKafkaProducer],
) -> None:
    producer = EventProducer("broker:9092")
    producer.send(event("a"))
    fake_kafka.instances[0].fail_with = KafkaTimeoutError()
    with pytest.raises(DeliveryError):
        producer.close()
    assert fake_kafka.instances[0].closed
    with pytest.raises(ProducerClosedError):
        producer.send(event("b"))


def outcome(event_id: str = "e-1", **overrides: Any) -> dict[str, Any]:
    return {"event_id": event_id, "model": "churn", "ts": 1_718_000_100, "label": "yes"} | overrides


def test_an_outcome_goes_to_the_outcomes_topic_keyed_by_model(
    fake_kafka: type[FakeKafkaProducer],
) -> None:
    with EventProducer("broker:9092") as producer:
        producer.send_outcome(outcome())
        producer.send_outcome(Outcome("e-2", "fraud", 1_718_000_200.0, True))
    (topic, key, value), (_, other_key, other_value) = fake_kafka.instances[0].sent
    assert (topic, key) == ("driftline.events.outcomes", b"churn")
    assert decode_outcome(value) == Outcome("e-1", "churn", 1_718_000_100.0, "yes")
    assert (other_key, decode_outcome(other_value).label) == (b"fraud", True)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"label": None}, "wrong_type"),
        ({"label": float("inf")}, "non_finite"),
        ({"ts": 2e12}, "bad_timestamp"),
    ],
)
def test_an_invalid_outcome_is_refused_before_sending(
    fake_kafka: type[FakeKafkaProducer], overrides: dict[str, Any], code: str
) -> None:
    producer = EventProducer("broker:9092")
    with pytest.raises(InvalidEvent) as caught:
        producer.send_outcome(outcome(**overrides))
    assert caught.value.code == code
    with pytest.raises(InvalidEvent, match="label"):
        producer.send_outcome({"event_id": "e-1", "model": "churn", "ts": 1})
    assert fake_kafka.instances == []  # nothing was even connected


def test_outcome_topic_follows_prefix_and_argument(
    fake_kafka: type[FakeKafkaProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLINE_TOPIC_PREFIX", "staging.")
    assert EventProducer("b:1").outcomes_topic == "staging.events.outcomes"
    assert EventProducer("b:1", outcomes_topic="mine").outcomes_topic == "mine"


def test_an_undelivered_outcome_is_reported_by_flush_and_close(
    fake_kafka: type[FakeKafkaProducer],
) -> None:
    producer = EventProducer("broker:9092")
    producer.send_outcome(outcome("o-1"))
    fake_kafka.instances[0].fail_with = NotLeaderForPartitionError()
    with pytest.raises(DeliveryError) as caught:
        producer.flush()
    (failure,) = caught.value.failures
    assert (failure.topic, failure.event_id) == ("driftline.events.outcomes", "o-1")
    producer.send_outcome(outcome("o-2"))
    with pytest.raises(DeliveryError, match="o-2"):
        producer.close()
    with pytest.raises(ProducerClosedError):
        producer.send_outcome(outcome("o-3"))
