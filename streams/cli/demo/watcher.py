"""The demo's topic watcher: what the workers publish, read in the background.

:class:`TopicWatcher` reads the metrics, registry and predictions topics of one run from their
beginning; :meth:`TopicWatcher.observation` gives the live view and the report a consistent copy
(an :class:`Observation`) of everything read so far, for one model. The metrics topic carries
two kinds of report: the trainer's (prequential, per candidate) and the scorer's live reports
(per served version and arm, from joined outcomes); both are kept, with when each was
published, so that the two can be drawn on one time axis.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from streams.cli.demo.errors import DemoError
from streams.registry.client import LiveReport
from streams.registry.records import ModelVersion, parse_record
from streams.topics import Topics

__all__ = ["Observation", "TopicWatcher"]


@dataclass(frozen=True)
class Observation:
    """What the metrics, registry and predictions topics held at one moment, for one model."""

    metrics: tuple[dict[str, Any], ...] = ()
    versions: tuple[ModelVersion, ...] = ()
    published_at: tuple[float, ...] = ()
    """When each of :attr:`versions` was published (the broker's timestamp of its record, epoch
    seconds), index for index."""
    predictions_by_version: Mapping[int, int] = field(default_factory=dict)
    """Predictions per version that made them: how far the scorer lags behind shows here."""
    scored: int = 0
    """Distinct events scored (predictions are at-least-once; a re-scored event counts once)."""
    metrics_at: tuple[float, ...] = ()
    """When each of :attr:`metrics` was published (epoch seconds), index for index."""
    live: tuple[LiveReport, ...] = ()
    """The scorer's live reports, in the order read; each one's ``ts`` is when it was made
    (epoch seconds)."""
    join_counts: Mapping[str, int] = field(default_factory=dict)
    """``expired`` (predictions whose outcome never came) and ``unmatched`` (outcomes past the
    horizon without a prediction), from the last live report."""

    @property
    def latest(self) -> dict[str, Any] | None:
        """The last metrics report."""
        return self.metrics[-1] if self.metrics else None

    @property
    def learned(self) -> int:
        """Events learned as of the last metrics report."""
        return self.latest["events"] if self.latest else 0


class TopicWatcher(threading.Thread):
    """Reads the metrics, registry and predictions topics from their beginning, in the background.

    No consumer group: it assigns every partition and seeks to the beginning, so it sees the
    whole run however late it starts, and leaves no committed offsets behind. Registry records
    that ``key`` did not sign are skipped (and logged), as every registry reader does.
    """

    def __init__(
        self,
        topics: Topics,
        kafka_config: Mapping[str, Any],
        model: str,
        *,
        key: bytes,
        metadata_timeout: float = 30.0,
    ) -> None:
        super().__init__(name="driftline-demo-watcher", daemon=True)
        self.topics = topics
        self.kafka_config = dict(kafka_config)
        self.model = model
        self.key = key
        self.metadata_timeout = metadata_timeout
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._metrics: list[dict[str, Any]] = []
        self._metrics_at: list[float] = []
        self._live: list[LiveReport] = []
        self._join_counts: dict[str, int] = {}
        self._versions: list[ModelVersion] = []
        self._published_at: list[float] = []
        self._by_version: Counter[int] = Counter()
        self._scored_ids: set[str] = set()

    def observation(self) -> Observation:
        """A consistent copy of everything read so far."""
        with self._lock:
            return Observation(
                metrics=tuple(self._metrics),
                versions=tuple(self._versions),
                published_at=tuple(self._published_at),
                predictions_by_version=dict(self._by_version),
                scored=len(self._scored_ids),
                metrics_at=tuple(self._metrics_at),
                live=tuple(self._live),
                join_counts=dict(self._join_counts),
            )

    def scored_event_ids(self) -> frozenset[str]:
        """The ids of the events scored so far (a copy: for the report, not every frame)."""
        with self._lock:
            return frozenset(self._scored_ids)

    def stop(self) -> None:
        """Ask the thread to finish (within one poll) and wait for it."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=5)

    def run(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(enable_auto_commit=False, **self.kafka_config)
        try:
            assigned = self._partitions(consumer)
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
            while not self._stopping.is_set():
                for tp, records in consumer.poll(timeout_ms=250).items():
                    with self._lock:
                        for record in records:
                            self._take(
                                tp.topic,
                                record.value,
                                f"{tp.topic}[{tp.partition}]",
                                _seconds(record.timestamp),
                            )
        except Exception as error:  # reported by the demo's main thread
            self.error = error
        finally:
            consumer.close()

    def _partitions(self, consumer: Any) -> list[Any]:
        from kafka import TopicPartition

        names = (self.topics.metrics, self.topics.registry, self.topics.predictions)
        deadline = time.monotonic() + self.metadata_timeout
        # Topics created a moment ago may not be in the broker's metadata yet.
        while True:
            found = {name: consumer.partitions_for_topic(name) for name in names}
            if all(found.values()):
                return [TopicPartition(n, p) for n in names for p in sorted(found[n])]
            if time.monotonic() > deadline or self._stopping.is_set():
                missing = [name for name, partitions in found.items() if not partitions]
                raise DemoError(f"topics not found on the broker: {', '.join(missing)}")
            time.sleep(0.2)

    def _take(self, topic: str, raw: bytes | None, where: str, timestamp: float) -> None:
        if topic == self.topics.registry:
            record = parse_record(raw, where=where, key=self.key)
            if record is not None and record.model == self.model:
                self._versions.append(record)
                self._published_at.append(timestamp)
            return
        try:
            value = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            return  # not ours to judge: the demo only watches
        if not isinstance(value, dict) or value.get("model") != self.model:
            return
        if topic == self.topics.metrics:
            live = LiveReport.parse(value)
            if live is not None:
                # The broker's time for a report that does not say when it was made.
                self._live.append(live if live.ts is not None else replace(live, ts=timestamp))
                self._join_counts = {
                    name: count
                    for name in ("expired", "unmatched")
                    if isinstance(count := value.get(name), int)
                }
            elif isinstance(value.get("events"), int) and isinstance(value.get("candidates"), dict):
                self._metrics.append(value)
                self._metrics_at.append(timestamp)
            return
        version, event_id = value.get("version"), value.get("event_id")
        # A prediction without them is skipped like undecodable JSON: a version that is not a
        # number would break the live view and the report, which sort the versions.
        if isinstance(version, int) and isinstance(event_id, str):
            self._by_version[version] += 1
            self._scored_ids.add(event_id)


def _seconds(timestamp_ms: int | None) -> float:
    """A record's broker timestamp in epoch seconds; now, for a record without one."""
    return timestamp_ms / 1000 if timestamp_ms is not None and timestamp_ms >= 0 else time.time()
