"""Events/s of one trainer worker end to end, next to the same candidates in-process.

Both run in this one command over the same events, so the ratio is measured under the same
machine load. A third figure, a faust agent that does nothing over the same topic, shows the
ceiling faust itself puts on any worker here. The worker's rate counts from its first
checkpoint to the one that holds every event, so its start-up (faust joining its consumer
group) is left out and reported apart.

The worker runs twice over the same events (each time in a group of its own): with its
Prometheus metrics, scraped every second as Prometheus would, and with ``--no-metrics``; the
difference is the overhead of the metrics on throughput.

    .venv/bin/python bench/pipeline_throughput.py [--events 200000]

Uses KAFKA_BOOTSTRAP_SERVERS / REDIS_URL when set, else starts a local stack for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaProducer

from streams.config import load_config
from streams.contract import encode_event
from streams.sdk.replay import from_drift
from streams.stack import LocalStack
from streams.stack.process import free_port
from streams.topics import Topics
from streams.workers.checkpoint import read_checkpoint
from trainers.trainer import ModelTrainer

CONFIG = Path(__file__).with_name("throughput.toml")


@contextlib.contextmanager
def services() -> Iterator[tuple[str, str]]:
    """The Kafka and Redis of the environment, or a local stack started for the run."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("REDIS_URL"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["REDIS_URL"]
        return
    with tempfile.TemporaryDirectory() as state:
        stack = LocalStack(Path(state))
        try:
            endpoints = stack.up()
            yield endpoints.kafka_bootstrap, endpoints.redis_url
        finally:
            stack.down()


def in_process_rate(events: list[dict]) -> float:
    trainer = ModelTrainer(load_config(CONFIG).models["bench"])
    start = time.perf_counter()
    for offset, event in enumerate(events):
        trainer.learn(event["features"], event["label"], source="t", position=offset)
    return len(events) / (time.perf_counter() - start)


def _scrape(port: int) -> None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            response.read()
    except OSError:
        pass  # not serving yet


def worker_rate(
    events: list[dict],
    bootstrap: str,
    redis_url: str,
    *,
    metrics: bool,
    security: Mapping[str, str] | None = None,
    producer_kafka: Mapping[str, Any] | None = None,
    prepare: Callable[[Topics, str], None] | None = None,
) -> tuple[float, float, str]:
    """Events/s of a trainer worker (with its metrics scraped every second, or without any).

    On a secured cluster, ``security`` holds the worker's ``KAFKA_*`` variables,
    ``producer_kafka`` the kafka-python settings that may write the events, and ``prepare``
    creates the run's topics and ACLs for its consumer group (see ``bench/secure_overhead.py``).
    """
    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        **(security or {}),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": redis_url,
        "DRIFTLINE_SIGNING_KEY": "bench",
        "DRIFTLINE_TOPIC_PREFIX": f"bench-{run}.",
        "DRIFTLINE_REDIS_PREFIX": f"driftline:bench-{run}:",
        "DRIFTLINE__worker__group": f"bench-{run}",
    }
    topics = Topics.from_prefix(env["DRIFTLINE_TOPIC_PREFIX"])
    from streams.admin import ensure_topics

    if prepare is not None:
        prepare(topics, env["DRIFTLINE__worker__group"])
    kafka = dict(producer_kafka or {"bootstrap_servers": bootstrap})
    ensure_topics(topics, kafka, partitions=1)
    producer = KafkaProducer(acks="all", linger_ms=20, batch_size=256 * 1024, **kafka)
    for event in events:
        producer.send(topics.labeled, key=b"bench", value=encode_event(event))
    producer.flush()
    producer.close()

    client = redis.Redis.from_url(redis_url)
    port = free_port()
    options = ["--metrics-port", str(port)] if metrics else ["--no-metrics"]
    launched = time.perf_counter()
    scraped = launched
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli.main", "worker", "--config", str(CONFIG), *options],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first: tuple[float, int] | None = None
    try:
        while True:
            cursor, _ = read_checkpoint(
                client,
                prefix=env["DRIFTLINE_REDIS_PREFIX"],
                group=env["DRIFTLINE__worker__group"],
                topic=topics.labeled,
                partition=0,
            )
            now = time.perf_counter()
            if cursor >= 0 and first is None:
                first = (now, cursor + 1)
            if cursor + 1 >= len(events):
                break
            if worker.poll() is not None:
                raise RuntimeError("the worker exited early")
            if metrics and now - scraped >= 1.0:
                _scrape(port)
                scraped = now
            time.sleep(0.05)
    finally:
        worker.terminate()
        worker.wait(30)
    assert first is not None
    return (len(events) - first[1]) / (now - first[0]), first[0] - launched, topics.labeled


def faust_ceiling(topic: str, events: int, bootstrap: str) -> float:
    script = Path(__file__).with_name("faust_ceiling.py")
    result = subprocess.run(
        [sys.executable, str(script), bootstrap, topic, str(events)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    # faust's worker may draw a spinner on stdout before the figure.
    return float(re.findall(r"(\d+)\s*$", result.stdout)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    events = list(
        from_drift(
            "hyperplane", model="bench", events=args.events, drift_at=args.events // 2, seed=1
        )
    )
    with services() as (bootstrap, redis_url):
        baseline = in_process_rate(events)
        end_to_end, startup, topic = worker_rate(events, bootstrap, redis_url, metrics=True)
        bare, _, _ = worker_rate(events, bootstrap, redis_url, metrics=False)
        ceiling = faust_ceiling(topic, len(events), bootstrap)
    print(f"events:               {args.events}")
    print(f"in-process trainer:   {baseline:10,.0f} events/s")
    print(f"worker, end to end:   {end_to_end:10,.0f} events/s  (start-up {startup:.1f} s)")
    print(f"worker, no metrics:   {bare:10,.0f} events/s")
    print(f"metrics overhead:     {1 - end_to_end / bare:10.1%}  (1 - with / without)")
    print(f"faust no-op agent:    {ceiling:10,.0f} events/s  (the same topic, nothing done)")
    print(
        f"ratio:                {end_to_end / baseline:10.2f}  (worker / in-process; target >= 0.5)"
    )


if __name__ == "__main__":
    main()
