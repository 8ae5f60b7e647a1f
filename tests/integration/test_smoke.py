"""Smoke tests of the real broker and Redis, through every client driftline uses."""

from __future__ import annotations

import asyncio
from collections import Counter

import faust
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin import NewTopic as AioNewTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic


def test_kafka_python_admin_creates_topics_one_compacted(kafka_bootstrap, unique):
    plain, compacted = unique("plain"), unique("compacted")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics(
            [
                NewTopic(plain, num_partitions=3, replication_factor=1),
                NewTopic(
                    compacted,
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"},
                ),
            ]
        )
        assert {plain, compacted} <= set(admin.list_topics())
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, compacted)])
        configs = described["topic"][compacted]
        assert configs["cleanup.policy"]["value"] == "compact"
    finally:
        admin.close()


def test_ten_thousand_keyed_records_read_back_exactly_once(kafka_bootstrap, unique):
    topic, group = unique("records"), unique("group")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    for index in range(10_000):
        producer.send(topic, key=f"key-{index % 17}".encode(), value=str(index).encode())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15_000,
    )
    seen: Counter[int] = Counter()
    for record in consumer:
        assert record.key == f"key-{int(record.value) % 17}".encode()
        seen[int(record.value)] += 1
        if len(seen) == 10_000:
            break
    consumer.commit()
    partitions = [TopicPartition(topic, p) for p in range(3)]
    end_offsets = consumer.end_offsets(partitions)
    committed = {tp: consumer.committed(tp) for tp in partitions}
    consumer.close()

    assert set(seen) == set(range(10_000))
    assert max(seen.values()) == 1
    assert committed == end_offsets


def test_aiokafka_negotiates_with_the_broker(kafka_bootstrap, unique):
    """aiokafka (faust's client) creates topics and round-trips records on this broker."""
    topic = unique("aio")

    async def round_trip() -> list[bytes]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([AioNewTopic(topic, num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for index in range(100):
                await producer.send(topic, str(index).encode())
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        values: list[bytes] = []
        try:
            while len(values) < 100:
                batch = await consumer.getmany(timeout_ms=10_000)
                values.extend(msg.value for msgs in batch.values() for msg in msgs)
        finally:
            await consumer.stop()
        return values

    values = asyncio.run(asyncio.wait_for(round_trip(), 60))
    assert values == [str(index).encode() for index in range(100)]


def test_faust_agent_consumes_and_its_output_is_read_back(kafka_bootstrap, unique):
    source_name, sink_name = unique("faust-in"), unique("faust-out")
    # An app started in-process (not by faust's Worker) does not create its topics.
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(name, 1, 1) for name in (source_name, sink_name)])
    admin.close()
    app = faust.App(
        unique("faust-app"),
        broker=f"kafka://{kafka_bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=1,
        producer_acks=-1,
    )
    source = app.topic(source_name, value_serializer="raw")
    sink = app.topic(sink_name, value_serializer="raw")

    @app.agent(source)
    async def double(stream):
        async for value in stream:
            await sink.send(value=str(2 * int(value)).encode())

    async def run() -> list[int]:
        await app.start()
        try:
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
            await producer.start()
            for index in range(50):
                await producer.send(source_name, str(index).encode())
            await producer.stop()
            consumer = AIOKafkaConsumer(
                sink_name, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
            )
            await consumer.start()
            doubled: list[int] = []
            try:
                while len(doubled) < 50:
                    batch = await consumer.getmany(timeout_ms=10_000)
                    doubled.extend(int(m.value) for msgs in batch.values() for m in msgs)
            finally:
                await consumer.stop()
            return doubled
        finally:
            await app.stop()

    doubled = asyncio.run(asyncio.wait_for(run(), 120))
    assert doubled == [2 * index for index in range(50)]


def test_redis_round_trips_bytes(redis_client):
    key = redis_client.test_prefix + "blob"
    payload = bytes(range(256)) * 64
    redis_client.set(key, payload)
    assert redis_client.get(key) == payload


def test_redis_url_is_usable_by_a_fresh_client(redis_url):
    assert redis.Redis.from_url(redis_url).ping()
