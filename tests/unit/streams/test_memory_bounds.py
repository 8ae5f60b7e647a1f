"""A trainer worker's memory is bounded: nothing it holds grows with the events it learns.

Over 1,000,000 events a worker's RSS follows what it buffers, not what it learned
(bench/throughput.py's long run): faust's stream buffer of fetched records, which the worker
bounds in records, so in bytes (:data:`streams.workers.app.STREAM_BUFFER_RECORDS`). The
runtime itself (ledger, outbox, trainers, lineage) holds the same Python memory after
thousands more events and checkpoints: measured here with tracemalloc over the fakes of
test_ledger.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

from test_ledger import TOPICS, ArtifactStore, Broker, MemoryCheckpoints, Worker, run, sea_events

from streams.config import DriftlineConfig, WorkerSettings
from streams.sdk.producer import DEFAULT_BATCH_BYTES
from streams.workers.app import FETCH_BYTES_PER_PARTITION, STREAM_BUFFER_RECORDS, WorkerApp

BUFFERED_BYTES_BOUND = 68 * 1024 * 1024
"""What fetched records may take while they wait (a worker's RSS is ~200 MiB)."""


def test_the_records_a_worker_buffers_are_bounded_in_bytes() -> None:
    """Of the SDK's largest batch records, the stream buffer and one fetch hold 68 MiB at most."""
    config = DriftlineConfig(models={}, worker=WorkerSettings(), topics=TOPICS)
    worker = WorkerApp("memory-test", config, {"bootstrap_servers": "localhost:9092"}, ())
    assert worker.app.conf.stream_buffer_maxsize == STREAM_BUFFER_RECORDS
    buffered = STREAM_BUFFER_RECORDS * DEFAULT_BATCH_BYTES + FETCH_BYTES_PER_PARTITION
    assert buffered <= BUFFERED_BYTES_BOUND


class ForgetfulCheckpoints(MemoryCheckpoints):
    """Keeps the latest checkpoint only, as Redis does (the test store keeps every save)."""

    async def save(self, *args: Any, **kwargs: Any) -> dict[str, str]:
        digests = await super().save(*args, **kwargs)
        self.saves.clear()
        return digests


class ForgetfulBroker(Broker):
    """Keeps the registry only (the test broker keeps every metrics report and dead letter)."""

    async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
        delivered = await super().send(topic, key, value)
        if topic != TOPICS.registry:
            self.sent[topic].clear()
        return delivered


def test_the_runtime_holds_no_more_memory_after_thousands_more_events() -> None:
    """Windows, scores and lineage fill within the first events; after that, 3,000 more events
    and 60 checkpoints leave the Python heap where it was.

    Stationary events (the stream drifts at 6,000), so that no promotion adds a registry record.
    What the heap gains meanwhile, 4 to 13 KiB, is CPython's free lists and caches filling; a
    list that kept one float an event would add ~100 KiB.
    """
    events = sea_events(12_000)[:6_000]
    worker = Worker(ForgetfulCheckpoints(), ForgetfulBroker(), ArtifactStore(), checkpoint_every=50)
    run(worker.feed(events[:1_500]))
    tracemalloc.start()
    try:
        run(worker.feed(events[1_500:3_000]))
        filled = tracemalloc.get_traced_memory()[0]
        run(worker.feed(events[3_000:]))
        grown = tracemalloc.get_traced_memory()[0] - filled
    finally:
        tracemalloc.stop()
    assert worker.trainer().events == len(events)
    assert grown < 32 * 1024, f"the runtime kept {grown:,} bytes more over 3,000 events"
