"""Seconds ``driftline registry verify`` takes per 100,000 events, next to learning them in-process.

    .venv/bin/python bench/verify_speed.py [--events 100000]

Needs a running deployment's environment (``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL``,
``DRIFTLINE_SIGNING_KEY`` or ``..._FILE``; ``driftline stack up`` prints them). The command
produces ``--events`` SEA events to a labeled topic of its own, learns them in this process as a
worker would (the baseline), publishes the version that learning issues after the last event
(artifact in Redis, signed record), and then verifies it with
:func:`streams.registry.verify.replay`, which reads the events back from Kafka, decodes them and
learns them again. Both are timed in the same run, so the ratio holds under the machine's load;
the topics and the artifact are deleted at the end.
"""

from __future__ import annotations

import argparse
import time
import tomllib
import uuid
from pathlib import Path

import redis
from kafka import KafkaAdminClient, KafkaProducer

from streams.admin import ensure_topics
from streams.contract import encode_event, event_position
from streams.registry.artifacts import Artifact
from streams.registry.records import ModelVersion
from streams.registry.verify import replay
from streams.sdk.replay import from_drift
from streams.settings import Settings
from streams.topics import Topics
from trainers.spec import ModelSpec
from trainers.trainer import ModelTrainer, Promotion

EXAMPLE = Path(__file__).parents[1] / "examples" / "sea.toml"


def sea_spec(events: int) -> ModelSpec:
    """The example's model, whose first version is issued at the last event."""
    table = tomllib.loads(EXAMPLE.read_text())["models"]["sea"]
    table["policy"] = {**table["policy"], "warmup": events}
    return ModelSpec.from_dict("sea", table)


def learn_in_process(spec: ModelSpec, events: list[dict], source: str) -> tuple[Promotion, float]:
    """The baseline: the events learned as a worker learns them, and the seconds it took."""
    trainer = ModelTrainer(spec)
    promotion = None
    start = time.perf_counter()
    for offset, event in enumerate(events):
        position = event_position(offset, None)
        promotion = trainer.learn(
            event["features"], event["label"], source=source, position=position
        )
    seconds = time.perf_counter() - start
    assert promotion is not None, "the version is issued at the last event"
    return promotion, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    settings = Settings.from_env()
    kafka, key = settings.kafka, settings.signing_key()
    topics = Topics.from_prefix(f"bench-verify-{uuid.uuid4().hex[:8]}.")
    ensure_topics(topics, kafka, partitions=1)
    events = list(from_drift("sea", model="sea", events=args.events, drift_at=args.events // 2))
    producer = KafkaProducer(acks="all", linger_ms=20, **kafka)
    for event in events:
        producer.send(topics.labeled, key=b"sea", value=encode_event(event), partition=0)
    producer.flush()

    spec = sea_spec(len(events))
    promotion, learning = learn_in_process(spec, events, f"{topics.labeled}[0]")
    artifact = Artifact.pack(
        promotion.estimator, model="sea", version=1, prefix=settings.redis_prefix, key=key
    )
    client = redis.Redis.from_url(settings.redis_url)
    client.set(artifact.ref.key, artifact.blob)
    record = ModelVersion.from_promotion(promotion, artifact.ref).signed(key)
    producer.send(topics.registry, key=b"sea", value=record.to_json()).get(timeout=30)
    producer.close()
    try:
        start = time.perf_counter()
        result = replay(
            "sea",
            1,
            kafka=kafka,
            registry_topic=topics.registry,
            signing_key=key,
            redis_client=client,
            max_event_bytes=1_000_000,
        )
        verifying = time.perf_counter() - start
    finally:
        client.delete(artifact.ref.key)
        admin = KafkaAdminClient(**kafka)
        admin.delete_topics([getattr(topics, name) for name in Topics.__slots__])
        admin.close()
    assert result.matches, result.divergence
    per_100k = 100_000 / len(events)
    print("| events | learning in-process (s) | verify (s) | verify per 100k events (s) | ratio |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {len(events):,} | {learning:.1f} | {verifying:.1f} | {verifying * per_100k:.1f} "
        f"| {verifying / learning:.2f} |"
    )


if __name__ == "__main__":
    main()
