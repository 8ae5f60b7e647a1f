"""The trainer's exactly-once protocol without Kafka or Redis: the ledger, the outbox, the runtime.

An in-memory fenced checkpoint store, fake events and a fake producer stand in for Redis and
Kafka (the real ones are covered by tests/integration); the models are the real
``trainers.ModelTrainer``. Each invariant of :mod:`streams.workers.ledger` has a test here that a
broken ledger fails in well under a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from typing import Any

import orjson
import pytest
import redis
from faust.types import TP

from streams.config import DriftlineConfig, WorkerSettings
from streams.contract import decode_dead_letter, encode_event
from streams.durability import DurabilityNotMet
from streams.registry.artifacts import Artifact
from streams.registry.records import ModelVersion
from streams.topics import Topics
from streams.workers.checkpoint import CheckpointFenced, CheckpointRefused, Claim, snapshot_digest
from streams.workers.deadletters import Recall, recalled
from streams.workers.outbox import Outbox
from streams.workers.trainer import KAFKA_ERRORS, TrainingRuntime
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

KEY = b"test signing key"
TOPICS = Topics.from_prefix("driftline.")
LABELED = TP(TOPICS.labeled, 0)
SPEC = {
    "task": "classification",
    "champion": "nb",
    "candidates": [
        {"name": "nb", "river": "naive_bayes.GaussianNB"},
        {"name": "lr", "river": "StandardScaler | LogisticRegression"},
    ],
    "policy": {"warmup": 50, "every": 50, "min_samples": 50},
}


@dataclasses.dataclass(frozen=True)
class Message:
    tp: TP
    offset: int
    key: bytes | None
    value: bytes


class Event:
    """A faust event as the ledger sees it: a message, and whether it was acknowledged."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.acked = False

    def ack(self) -> bool:
        self.acked = True
        return True


class MemoryCheckpoints:
    """A fenced checkpoint store in memory, with Redis outages on demand."""

    def __init__(self) -> None:
        self.epoch: dict[tuple[str, int], int] = {}
        self.cursor: dict[tuple[str, int], int] = {}
        self.snapshots: dict[tuple[str, int], dict[str, bytes]] = {}
        self.sources: dict[tuple[str, int], dict[str, int]] = {}
        self.marks: dict[tuple[str, int], int] = {}
        self.owners: dict[tuple[str, str], int] = {}
        self.saves: list[tuple[int, dict[str, bytes]]] = []
        self.down = False
        self.failure: redis.RedisError = redis.ConnectionError("Redis is down (test)")
        self.refuse = False

    def _check(self) -> None:
        if self.down:
            raise self.failure

    async def claim(self, topic: str, partition: int) -> Claim:
        self._check()
        if self.refuse:
            raise CheckpointRefused(f"{topic}[{partition}]: tampered (test)")
        key = (topic, partition)
        self.epoch[key] = self.epoch.get(key, 0) + 1
        return Claim(
            epoch=self.epoch[key],
            cursor=self.cursor.get(key, -1),
            snapshots=dict(self.snapshots.get(key, {})),
            sources=dict(self.sources.get(key, {})),
            dead_letters=self.marks.get(key),
        )

    async def save(
        self,
        topic: str,
        partition: int,
        *,
        epoch: int,
        cursor: int,
        snapshots: dict[str, bytes],
        digests: Any = None,
        sources: Any = None,
        dead_letters: int | None = None,
    ) -> dict[str, str]:
        self._check()
        key = (topic, partition)
        if self.epoch.get(key) != epoch:
            raise CheckpointFenced(f"{topic}[{partition}] claimed by another worker")
        self.cursor[key] = cursor
        self.sources[key] = dict(sources or {})
        if dead_letters is not None:
            self.marks[key] = dead_letters
        self.snapshots.setdefault(key, {}).update(snapshots)
        self.saves.append((cursor, dict(snapshots)))
        return {m: snapshot_digest(b) for m, b in self.snapshots[key].items()}

    async def own(self, topic: str, model: str, partition: int) -> int:
        self._check()
        return self.owners.setdefault((topic, model), partition)


@dataclasses.dataclass(frozen=True)
class Delivered:
    """Where the broker put a record (aiokafka's RecordMetadata)."""

    topic: str
    partition: int
    offset: int


class Broker:
    """Records what was sent, per topic (one partition each); each send is delivered at once."""

    def __init__(self) -> None:
        self.sent: dict[str, list[tuple[bytes, bytes]]] = {}

    async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
        log = self.sent.setdefault(topic, [])
        log.append((key, value))
        delivered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivered.set_result(Delivered(topic, 0, len(log) - 1))
        return delivered

    async def read_dead_letters(
        self, topic: str, partition: int, cursor: int, mark: int | None
    ) -> Recall:
        """The ledger's recall, as streams.workers.deadletters.read_dead_letters reads Kafka."""
        letters = self.sent.get(TOPICS.dlq, [])
        start = len(letters) if mark is None else mark
        return recalled(
            [(key, offset) for offset, (key, _) in enumerate(letters) if offset >= start],
            end=len(letters),
            source_topic=topic,
            source_partition=partition,
            after=cursor,
        )

    def records(self) -> list[ModelVersion]:
        return [ModelVersion.from_json(value) for _, value in self.sent.get(TOPICS.registry, [])]

    def dead_letters(self) -> list[dict[str, Any]]:
        return [decode_dead_letter(value) for _, value in self.sent.get(TOPICS.dlq, [])]


class ArtifactStore:
    def __init__(self) -> None:
        self.down = False
        self.stored: dict[str, bytes] = {}

    async def store(self, artifact: Artifact) -> None:
        if self.down:
            raise redis.ConnectionError("Redis is down (test)")
        self.stored[artifact.ref.sha256] = artifact.blob

    async def holds(self, artifact: Artifact) -> bool:
        if self.down:
            raise redis.ConnectionError("Redis is down (test)")
        return artifact.ref.sha256 in self.stored


class Consumer:
    def __init__(self) -> None:
        self.paused: set[TP] = set()
        self.given_up: list[TP] = []

    def pause(self, tps: Iterable[TP]) -> None:
        self.paused |= set(tps)

    def give_up(self, tp: TP) -> None:
        self.given_up.append(tp)


class Worker:
    """One trainer worker's runtime over the shared fakes (a new Worker is a restart)."""

    def __init__(
        self,
        checkpoints: MemoryCheckpoints,
        broker: Broker,
        artifacts: ArtifactStore,
        **worker: Any,
    ) -> None:
        self.consumer = Consumer()
        self.broker = broker
        settings = WorkerSettings(
            **{"checkpoint_every": 10_000, "checkpoint_interval": 1e9, **worker}
        )
        config = DriftlineConfig(
            models={"sea": ModelSpec.from_dict("sea", SPEC)}, worker=settings, topics=TOPICS
        )

        async def read_registry() -> list[ModelVersion]:
            return broker.records()

        self.runtime = TrainingRuntime(
            config,
            checkpoints=checkpoints,  # type: ignore[arg-type]
            outbox=Outbox(
                send=broker.send,
                store_artifact=artifacts.store,
                holds_artifact=artifacts.holds,
                registry_topic=TOPICS.registry,
                signing_key=KEY,
                redis_prefix="test:",
                store_errors=(redis.RedisError,),
                delivery_errors=KAFKA_ERRORS,
            ),
            consumer=self.consumer,
            read_registry=read_registry,
            read_dead_letters=broker.read_dead_letters,
        )

    async def feed(self, events: Iterable[Event]) -> None:
        if not self.runtime.registry_caught_up.is_set():
            await self.runtime.obey(self.broker.records(), caught_up=True)
        for event in events:
            await self.runtime.handle(event)

    def trainer(self, tp: TP = LABELED) -> ModelTrainer:
        return self.runtime.ledger.partitions[tp].models["sea"]


def sea_events(
    n: int, *, tp: TP = LABELED, key: bytes | None = b"sea", start: int = 0
) -> list[Event]:
    stream = drift_stream("sea", n=n, drift_at=n // 2, seed=7)
    return [
        Event(
            Message(
                tp,
                start + offset,
                key,
                encode_event(
                    {"event_id": f"e{offset}", "model": "sea", "ts": 1, "features": x, "label": y}
                ),
            )
        )
        for offset, (x, y) in enumerate(stream)
    ]


def fakes() -> tuple[MemoryCheckpoints, Broker, ArtifactStore]:
    return MemoryCheckpoints(), Broker(), ArtifactStore()


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_a_promotion_checkpoint_covers_the_event_that_caused_it() -> None:
    """Cursor before learning: the checkpoint taken at a promotion includes its event."""
    checkpoints, broker, artifacts = fakes()
    worker = Worker(checkpoints, broker, artifacts)
    run(worker.feed(sea_events(60)))
    promoting = broker.records()[0].lineage
    claimed, (cursor, snapshots) = checkpoints.saves[:2]
    assert claimed == (-1, {}), "a new partition is saved with its dead-letter mark at its claim"
    assert cursor == 49
    assert ModelTrainer.restore(snapshots["sea"], worker.trainer().spec)[0].events == cursor + 1
    assert promoting["events"] == 50


def test_a_crash_at_any_event_learns_every_event_exactly_once() -> None:
    events = sea_events(400)
    baseline = Worker(*fakes())
    run(baseline.feed(events))
    expected = baseline.trainer().report()

    checkpoints, broker, artifacts = fakes()
    for crash_after in (37, 50, 51, 163, 250, 400):
        worker = Worker(checkpoints, broker, artifacts, checkpoint_every=40)
        resume = checkpoints.cursor.get((LABELED.topic, LABELED.partition), -1) + 1
        # faust redelivers from the committed offset, which may lag the cursor: from 0 here.
        run(worker.feed([Event(e.message) for e in events[: max(crash_after, resume)]]))
    run(worker.runtime.ledger.checkpoint())
    assert worker.trainer().report() == expected
    versions = [record.version for record in broker.records()]
    assert versions == sorted(set(versions)), "I5: a version was published twice"


@pytest.mark.parametrize(
    "failure",
    [
        redis.ConnectionError("Redis is down (test)"),
        # [redis] durability: saved by the primary, not yet by a replica or the AOF.
        DurabilityNotMet("no replica acknowledged it (test)"),
    ],
)
def test_events_are_acknowledged_only_after_their_checkpoint_is_saved(
    failure: redis.RedisError,
) -> None:
    """I1: an event acknowledged before its persist would be lost by a crash."""
    checkpoints, broker, artifacts = fakes()
    checkpoints.failure = failure
    worker = Worker(checkpoints, broker, artifacts)
    events = sea_events(30)
    run(worker.feed(events[:10]))
    checkpoints.down = True
    run(worker.feed(events[10:]))
    assert run(worker.runtime.ledger.checkpoint()) is False
    assert not any(event.acked for event in events)
    checkpoints.down = False
    assert run(worker.runtime.ledger.checkpoint()) is True
    assert all(event.acked for event in events)
    assert checkpoints.cursor[(LABELED.topic, 0)] == 29


def test_no_checkpoint_covers_a_promotion_that_waits_for_redis() -> None:
    """I4: the checkpoint would otherwise skip the promotion's event after a crash."""
    checkpoints, broker, artifacts = fakes()
    worker = Worker(checkpoints, broker, artifacts)
    artifacts.down = True
    events = sea_events(80)
    run(worker.feed(events))
    assert broker.records() == []
    assert run(worker.runtime.ledger.checkpoint()) is False
    assert checkpoints.saves == [(-1, {})], "only the claim's"
    assert not any(event.acked for event in events)
    artifacts.down = False
    assert run(worker.runtime.ledger.checkpoint()) is True
    assert [r.version for r in broker.records()] == [1]
    assert set(artifacts.stored) == {broker.records()[0].artifact.sha256}, "I3"
    assert all(event.acked for event in events)


def test_a_fenced_partition_is_given_up_for_the_group_to_reassign() -> None:
    checkpoints, broker, artifacts = fakes()
    worker = Worker(checkpoints, broker, artifacts)
    events = sea_events(20)
    run(worker.feed(events[:10]))
    run(checkpoints.claim(LABELED.topic, 0))  # another worker took the partition over
    run(worker.runtime.ledger.checkpoint())
    assert worker.consumer.given_up == [LABELED]
    run(worker.feed(events[10:]))
    assert LABELED not in worker.runtime.ledger.partitions
    assert not any(event.acked for event in events)
    worker.runtime.assigned({LABELED})
    run(worker.feed([Event(e.message) for e in events]))
    assert worker.trainer().events == 20


def test_a_refused_checkpoint_pauses_its_partition_and_learns_nothing() -> None:
    checkpoints, broker, artifacts = fakes()
    checkpoints.refuse = True
    worker = Worker(checkpoints, broker, artifacts)
    events = sea_events(5)
    run(worker.feed(events))
    assert worker.consumer.paused == {LABELED}
    assert LABELED in worker.runtime.ledger.refused
    assert not any(event.acked for event in events)
    assert checkpoints.saves == []


def test_too_many_unacknowledged_events_hold_the_agent_until_a_checkpoint() -> None:
    checkpoints, broker, artifacts = fakes()
    worker = Worker(checkpoints, broker, artifacts, max_unacked_events=15)
    ledger = worker.runtime.ledger
    held: list[int] = []

    async def sleep(seconds: float) -> None:
        held.append(ledger.unacked)
        if len(held) == 3:
            checkpoints.down = False

    ledger.sleep = sleep
    checkpoints.down = True
    run(worker.feed(sea_events(1)))  # the claim is retried until Redis is back
    checkpoints.down = True
    held.clear()
    events = sea_events(20)[1:]
    run(worker.feed(events))
    assert held == [15, 15, 15], "no event is taken while the limit is reached"
    assert all(event.acked for event in events[:14])
    assert worker.consumer.paused == set(), "faust's pause would drop a fetched batch's records"


def test_an_event_whose_key_is_not_its_model_is_a_dead_letter() -> None:
    checkpoints, broker, artifacts = fakes()
    worker = Worker(checkpoints, broker, artifacts)
    run(worker.feed(sea_events(3, key=None) + sea_events(3, key=b"other", start=3)))
    assert [d["reason_code"] for d in broker.dead_letters()] == ["key_mismatch"] * 6
    assert "sea" not in worker.runtime.ledger.partitions[LABELED].models


def test_a_model_is_trained_on_one_partition_only() -> None:
    checkpoints, broker, artifacts = fakes()
    worker = Worker(checkpoints, broker, artifacts)
    elsewhere = TP(TOPICS.labeled, 3)
    run(worker.feed(sea_events(60) + sea_events(60, tp=elsewhere)))
    letters = broker.dead_letters()
    assert len(letters) == 60
    assert {d["reason_code"] for d in letters} == {"wrong_partition"}
    assert "murmur2" in letters[0]["reason"]
    assert "sea" not in worker.runtime.ledger.partitions[elsewhere].models
    assert [r.version for r in broker.records()] == [1]


def test_metrics_reports_are_published_every_metrics_every_events() -> None:
    checkpoints, broker, artifacts = fakes()
    worker = Worker(checkpoints, broker, artifacts, metrics_every=25)
    run(worker.feed(sea_events(60)))
    reports = [orjson.loads(value) for _, value in broker.sent[TOPICS.metrics]]
    assert [r["events"] for r in reports] == [25, 50]


def test_a_join_a_scorer_publishes_again_is_learned_once() -> None:
    checkpoints, broker, artifacts = fakes()
    events = sea_events(30)
    joined = [
        Event(dataclasses.replace(e.message, value=_with_join(e.message.value, seq)))
        for seq, e in enumerate(events, start=1)
    ]
    worker = Worker(checkpoints, broker, artifacts)
    run(worker.feed(joined[:20]))
    run(worker.runtime.ledger.checkpoint())
    # The scorer crashed after publishing joins 11-20 and before trimming them: they come again.
    replayed = [
        Event(dataclasses.replace(e.message, offset=e.message.offset + 20)) for e in joined[10:]
    ]
    run(worker.feed(replayed))
    assert worker.trainer().events == 30
    run(worker.runtime.ledger.checkpoint())
    restarted = Worker(checkpoints, broker, artifacts)
    run(restarted.feed([Event(dataclasses.replace(joined[29].message, offset=99))]))
    assert restarted.trainer().events == 30, "the high-water mark is in the checkpoint"


def _with_join(value: bytes, seq: int) -> bytes:
    return orjson.dumps({**orjson.loads(value), "join": {"source": "scorer/0", "seq": seq}})
