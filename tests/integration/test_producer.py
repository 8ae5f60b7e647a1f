"""Integration test of the producer SDK against a real Kafka broker."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord

from streams.contract import LabeledEvent, decode_labeled_record
from streams.sdk.producer import EventProducer

pytestmark = pytest.mark.integration

EVENTS = 1_000
MODELS = ["churn", "fraud", "sea", "ctr", "ltv"]


def read_events(
    bootstrap: str, topic: str, expected: int, deadline_s: float = 60.0
) -> list[tuple[ConsumerRecord, LabeledEvent]]:
    """Every event of the topic, with the record holding it (one, or a batch)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    events: list[tuple[ConsumerRecord, LabeledEvent]] = []
    deadline = time.monotonic() + deadline_s
    try:
        while len(events) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    for entry in decode_labeled_record(record.value):
                        assert isinstance(entry.decoded, LabeledEvent)
                        events.append((record, entry.decoded))
    finally:
        consumer.close()
    return events


@pytest.mark.parametrize("batch_events", [500, 1], ids=["batch-records", "single-records"])
def test_thousand_events_arrive_keyed_by_model_and_decodable(
    kafka_bootstrap: str, unique: Callable[[str], str], batch_events: int
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

    with EventProducer(kafka_bootstrap, topic=topic, batch_events=batch_events) as producer:
        for event in sent.values():
            producer.send(event)
        producer.flush(timeout=30)

    events = read_events(kafka_bootstrap, topic, EVENTS)
    received: dict[str, LabeledEvent] = {}
    partitions_by_model: defaultdict[str, set[int]] = defaultdict(set)
    for record, event in events:
        assert record.key == event.model.encode()
        partitions_by_model[event.model].add(record.partition)
        received[event.event_id] = event
    assert len(events) == EVENTS  # idempotent producer: no duplicates
    assert received == sent
    if batch_events > 1:
        assert len({(r.partition, r.offset) for r, _ in events}) < EVENTS, "sent in batches"
    # Keying by model keeps each model's events in one partition, hence in order.
    assert all(len(partitions) == 1 for partitions in partitions_by_model.values())
