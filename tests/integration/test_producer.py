"""Integration test of the producer SDK against a real Kafka broker."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord

from streams.contract import LabeledEvent, decode_labeled
from streams.sdk.producer import EventProducer

pytestmark = pytest.mark.integration

EVENTS = 1_000
MODELS = ["churn", "fraud", "sea", "ctr", "ltv"]


def read_all(
    bootstrap: str, topic: str, expected: int, deadline_s: float = 60.0
) -> list[ConsumerRecord]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + deadline_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_thousand_events_arrive_keyed_by_model_and_decodable(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic = unique("events")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        admin.close()
    sent = {
        f"e-{index}": LabeledEvent(
            event_id=f"e-{index}",
            model=MODELS[index % len(MODELS)],
            ts=1_718_000_000.0 + index,
            features={"x": index * 0.5, "bucket": f"b{index % 7}", "odd": index % 2 == 1},
            label=index % 3,
        )
        for index in range(EVENTS)
    }

    with EventProducer(kafka_bootstrap, topic=topic) as producer:
        for event in sent.values():
            producer.send(event)
        producer.flush(timeout=30)

    records = read_all(kafka_bootstrap, topic, EVENTS)
    received: dict[str, LabeledEvent] = {}
    partitions_by_model: defaultdict[str, set[int]] = defaultdict(set)
    for record in records:
        event = decode_labeled(record.value)
        assert record.key == event.model.encode()
        partitions_by_model[event.model].add(record.partition)
        received[event.event_id] = event
    assert len(records) == EVENTS  # idempotent producer: no duplicates
    assert received == sent
    # Keying by model keeps each model's events in one partition, hence in order.
    assert all(len(partitions) == 1 for partitions in partitions_by_model.values())
