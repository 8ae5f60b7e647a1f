"""Batch records of events to score, and the join's commit and publishing, without Kafka or Redis.

The join runs on :class:`FakeRedis`, which runs the commit script's commands in Python; the same
protocol runs against the real broker and Redis in tests/integration/test_scorer_batch_sigkill.py.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiokafka.errors
import kafka.errors
import orjson
import pytest
from faust.types import TP
from test_event_producer import FakeKafkaProducer
from test_scoring_runtime import ConstantModel, FakeEvent, FakeMessage, version

import streams.sdk.producer as producer_module
from streams.config import load_config
from streams.contract import (
    POSITION_STRIDE,
    InvalidEvent,
    Outcome,
    UnlabeledEvent,
    decode_dead_letter,
    decode_unlabeled_record,
    encode_batch,
    encode_event,
    encode_outcome,
)
from streams.registry.records import ModelVersion
from streams.sdk.producer import EventProducer
from streams.topics import Topics
from streams.workers.checkpoint import Claim, checkpoint_keys
from streams.workers.deadletters import Tail, TailRecord
from streams.workers.join import Joiner, Served
from streams.workers.scorer import ScoringRuntime, Serving, ServingTable

SEA_CONFIG = Path(__file__).parents[3] / "examples" / "sea.toml"
TOPICS = Topics.from_prefix("t.")
GROUP = "scorer"


class FakeRedis:
    """The asyncio Redis calls the join makes, on dicts; its commit script runs in Python."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.lists: dict[str, list[bytes]] = {}
        self.hashes: dict[str, Counter[bytes]] = {}
        self.sorted: dict[str, dict[bytes, float]] = {}
        self.scripts_run = 0
        self.marks_saved = 0
        self.reads = 0

    def register_script(self, source: str) -> Any:
        async def commit(*, keys: list[str], args: list[Any]) -> int:
            """The join's commit script (see streams.workers.join._COMMIT)."""
            epoch, commands, absent, present = args
            if all(c[0] == "LTRIM" or c[1].endswith(":mark") for c in orjson.loads(commands)):
                self.marks_saved += 1  # a claim's or a checkpoint's, not a message's commit
            else:
                self.scripts_run += 1
            if self.values.get(keys[0]) != str(epoch).encode():
                return 0
            if any(self._exists(key) for key in orjson.loads(absent)):
                return 2
            if not all(self._exists(key) for key in orjson.loads(present)):
                return 2
            for command in orjson.loads(commands):
                self._run(*command)
            return 1

        return commit

    def _exists(self, key: str) -> bool:
        return any(key in kind for kind in (self.values, self.lists, self.hashes, self.sorted))

    def _run(self, name: str, key: str, *args: str) -> None:
        if name == "SET":
            self.values[key] = args[0].encode()
        elif name == "DEL":
            for kind in (self.values, self.lists, self.hashes, self.sorted):
                kind.pop(key, None)
        elif name == "RPUSH":
            self.lists.setdefault(key, []).extend(value.encode() for value in args)
        elif name == "HINCRBY":
            self.hashes.setdefault(key, Counter())[args[0].encode()] += int(args[1])
        elif name == "ZADD":
            self.sorted.setdefault(key, {})[args[1].encode()] = float(args[0])
        elif name == "ZREM":
            self.sorted.get(key, {}).pop(args[0].encode(), None)
        elif name == "LTRIM":
            assert args[1] == "-1"
            self.lists[key] = self.lists.get(key, [])[int(args[0]) :]
        else:
            raise AssertionError(f"the fake does not know {name}")

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self.reads += 1
        return [self.values.get(key) for key in keys]

    async def get(self, key: str) -> bytes | None:
        return self.values.get(key)

    async def ltrim(self, key: str, start: int, end: int) -> None:
        assert end == -1
        self.lists[key] = self.lists.get(key, [])[start:]

    async def zrangebyscore(self, key: str, low: str, high: float, **_: Any) -> list[bytes]:
        return [m for m, score in self.sorted.get(key, {}).items() if score <= high]

    async def zcard(self, key: str) -> int:
        return len(self.sorted.get(key, {}))

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        return FakePipeline(self)

    def outbox(self, partition: int = 0) -> list[dict[str, Any]]:
        [key] = fnmatch.filter(self.lists, f"*:{partition}:outbox") or [""]
        return [orjson.loads(entry) for entry in self.lists.get(key, [])]


@dataclass
class FakePipeline:
    redis: FakeRedis
    calls: list[Any] = field(default_factory=list)

    def get(self, key: str) -> None:
        self.calls.append(self.redis.values.get(key))

    def lrange(self, key: str, start: int, end: int) -> None:
        self.calls.append(list(self.redis.lists.get(key, [])))

    def hgetall(self, key: str) -> None:
        self.calls.append(dict(self.redis.hashes.get(key, {})))

    async def execute(self) -> list[Any]:
        return self.calls


@dataclass
class FakeCheckpoints:
    """Claims at the next epoch (written where the commit script looks for it); saves
    nothing."""

    redis: FakeRedis
    saved: int = 0

    async def claim(self, topic: str, partition: int) -> Claim:
        epoch_key = checkpoint_keys(f"p:checkpoint:{GROUP}", topic, partition)[0]
        epoch = int(self.redis.values.get(epoch_key, b"0")) + 1
        self.redis.values[epoch_key] = str(epoch).encode()
        return Claim(epoch=epoch, cursor=-1, snapshots={})

    async def save(self, topic: str, partition: int, **_: Any) -> dict[str, str]:
        self.saved += 1
        return {}


@dataclass(frozen=True)
class Landed:
    """Where the broker put a record (aiokafka's RecordMetadata, in short)."""

    topic: str
    partition: int
    offset: int


@dataclass
class Producer:
    """Hands each record a delivery that stays pending until ``acknowledge``, which writes it to
    ``topics`` (one partition each), the log a new owner's recall reads; refuses the next
    ``refusing`` sends as aiokafka does when it has no metadata in time."""

    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    deliveries: list[asyncio.Future[Any]] = field(default_factory=list)
    topics: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    refusing: int = 0
    reads: list[dict[tuple[str, int], int]] = field(default_factory=list)
    unreadable: int = 0
    """The next recalls that fail as kafka-python does when the broker is away."""

    async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
        if self.refusing:
            self.refusing -= 1
            raise aiokafka.errors.KafkaTimeoutError()
        self.sent.append((topic, key, value))
        self.deliveries.append(asyncio.get_running_loop().create_future())
        return self.deliveries[-1]

    def acknowledge(self, count: int | None = None) -> None:
        for (topic, key, value), delivery in zip(self.sent[:count], self.deliveries, strict=False):
            if not delivery.done():
                log = self.topics.setdefault(topic, [])
                log.append((key, value))
                delivery.set_result(Landed(topic, 0, len(log) - 1))

    async def recall(self, starts: dict[tuple[str, int], int]) -> Tail:
        """What a new owner's recall reads of the dead-letter and predictions topics."""
        self.reads.append(dict(starts))
        if self.unreadable:
            self.unreadable -= 1
            raise kafka.errors.KafkaConnectionError("broker away")
        ends = {
            (topic, 0): len(self.topics.get(topic, []))
            for topic in (TOPICS.dlq, TOPICS.predictions)
        }
        records = [
            TailRecord(topic, 0, offset, *self.topics[topic][offset])
            for (topic, _), start in starts.items()
            for offset in range(start, ends[(topic, 0)])
        ]
        return Tail(ends=ends, records=records)

    def values(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(value) for sent_to, _, value in self.sent if sent_to == topic]


@pytest.fixture
def config():
    return load_config(SEA_CONFIG, {})


def joiner(config, redis: FakeRedis, producer: Producer, *, recall: bool = True) -> Joiner:
    async def no_decision(model: str, decision: Any) -> None:
        return None

    return Joiner(
        redis,  # type: ignore[arg-type]
        checkpoints=FakeCheckpoints(redis),  # type: ignore[arg-type]
        specs=config.models,
        topics=TOPICS,
        send=producer.send,
        prefix="p:",
        group=GROUP,
        on_decision=no_decision,
        recall=producer.recall if recall else None,
        retry_first=0.001,
    )


def scoring(config, join: Joiner) -> ScoringRuntime:
    table = ServingTable()
    table.put(Serving(version(2), ConstantModel(2)))
    table.ready.set()

    async def publish_record(record: ModelVersion) -> None:
        return None

    return ScoringRuntime(config, table=table, joiner=join, publish_record=publish_record)


def unlabeled(event_id: str, model: str = "sea", **features: Any) -> dict[str, Any]:
    return {"event_id": event_id, "model": model, "ts": 1.0, "features": {"x": 1.0, **features}}


def record(offset: int, *events: dict[str, Any]) -> FakeEvent:
    value = encode_batch([orjson.dumps(event) for event in events])
    return FakeEvent(FakeMessage(value, offset, key=b"sea", tp=TP(TOPICS.unlabeled, 0)))


def served(*event_ids: str) -> list[Served]:
    prediction = {"version": 1, "arm": "stable", "prediction": True, "probabilities": None}
    return [Served(UnlabeledEvent(i, "sea", 1.0, {"x": 1.0}), [prediction]) for i in event_ids]


def test_an_unlabeled_record_decodes_into_its_events_each_valid_or_refused_alone():
    good = encode_event(unlabeled("e-1") | {"label": True})
    [single] = decode_unlabeled_record(good)
    assert single.index is None and single.decoded.event_id == "e-1"
    batch = decode_unlabeled_record(encode_batch([good, b'{"model": "sea"}', b"3"]))
    assert [entry.index for entry in batch] == [0, 1, 2]
    assert [getattr(entry.decoded, "code", "ok") for entry in batch] == [
        "ok",
        "missing_field",
        "not_object",
    ]
    assert batch[1].original(None) == b'{"model":"sea"}'
    for whole, code in ((b"[]", "empty_field"), (b"true", "not_object"), (b"[", "not_json")):
        with pytest.raises(InvalidEvent) as refused:
            decode_unlabeled_record(whole)
        assert refused.value.code == code


def test_a_batch_record_is_scored_in_one_commit_and_its_bad_events_dead_lettered_alone(config):
    redis, producer = FakeRedis(), Producer()
    runtime = scoring(config, joiner(config, redis, producer))
    batch = record(
        7,
        unlabeled("e-0"),
        {"event_id": "e-1", "model": "sea"},
        unlabeled("e-2"),
        unlabeled("e-3", model="other"),
        unlabeled("e-4", boom=1.0),
    )
    asyncio.run(runtime.handle(batch))

    assert batch.acked
    assert redis.scripts_run == 1, "one commit for the whole record"
    assert [p["event_id"] for p in producer.values(TOPICS.predictions)] == ["e-0", "e-2"]
    letters = [decode_dead_letter(v) for topic, _, v in producer.sent if topic == TOPICS.dlq]
    assert [(d["source"]["index"], d["reason_code"]) for d in letters] == [
        (1, "missing_field"),
        (3, "unknown_model"),
        (4, "model_error"),
    ]
    assert orjson.loads(letters[2]["original"])["event_id"] == "e-4"
    assert {d["source"]["offset"] for d in letters} == {7}
    [served_tally] = redis.hashes.values()
    assert sum(served_tally.values()) == 2
    asyncio.run(runtime.handle(batch))  # a replay after a crash: skipped by the cursor
    assert redis.scripts_run == 1 and len(producer.sent) == 5


def test_an_event_that_meets_its_waiting_outcome_is_committed_again_after_one_lookup(config):
    redis, producer = FakeRedis(), Producer()
    join = joiner(config, redis, producer)

    async def scenario() -> None:
        state = await join.owned(0)
        for offset, event_id in enumerate(("e-1", "e-3")):
            outcome = Outcome(event_id, "sea", 2.0, label=False)
            assert await join.outcome(state, 0, offset, outcome, encode_outcome(outcome))
        assert redis.scripts_run == 2
        assert await join.served(state, 0, 0, served("e-0"), [])
        assert redis.scripts_run == 3, "no outcome met: committed at the first try"
        assert await join.served(state, 0, 1, served("e-1", "e-2", "e-3", "e-1"), [])
        assert redis.scripts_run == 5, "an outcome met: the first try wrote nothing"
        assert len(state.boards["sea"].report()) == 1

    asyncio.run(scenario())
    labeled = producer.values(TOPICS.labeled)
    assert [(r["event_id"], r["label"]) for r in labeled] == [("e-1", False), ("e-3", False)]
    [entry] = [entry for entry in redis.outbox() if entry["joins"]]
    assert [r["join"]["seq"] for r in labeled] == [
        entry["seq"] * POSITION_STRIDE,
        entry["seq"] * POSITION_STRIDE + 1,
    ], "one number per join, increasing"
    assert len(entry["joins"]) == 2, "the second e-1 of the record finds it joined"
    pending = [key for key in redis.values if ":pred:" in key]
    assert [key.rsplit(":", 1)[1] for key in sorted(pending)] == ["e-0", "e-2"]


def test_an_outcome_of_a_prediction_this_owner_committed_is_joined_without_a_read(config):
    redis, producer = FakeRedis(), Producer()
    join = joiner(config, redis, producer)

    async def scenario() -> None:
        state = await join.owned(0)
        assert await join.served(state, 0, 0, served("e-0", "e-1"), [])
        # e-1's prediction expired in Redis, behind the owner's back.
        del redis.values[next(key for key in redis.values if key.endswith(":pred:3:sea:e-1"))]
        for offset, event_id in enumerate(("e-0", "e-1")):
            outcome = Outcome(event_id, "sea", 2.0, label=True)
            assert await join.outcome(state, 0, offset, outcome, encode_outcome(outcome))
        assert (redis.scripts_run, redis.reads) == (4, 1), "e-1 alone was read, after a try"
        assert list(state.pending) == []

    asyncio.run(scenario())
    assert [r["event_id"] for r in producer.values(TOPICS.labeled)] == ["e-0"]
    assert any(":out:3:sea:e-1" in key for key in redis.values), "e-1's outcome waits"


def test_records_are_published_in_order_without_waiting_and_trimmed_once_acknowledged(config):
    redis, producer = FakeRedis(), Producer()
    join = joiner(config, redis, producer)

    async def scenario() -> None:
        state = await join.owned(0)
        for offset in range(3):
            # Returns with its records handed over, their deliveries still pending.
            assert await join.served(state, 0, offset, served(f"e-{offset}"), [])
        assert [orjson.loads(v)["event_id"] for _, _, v in producer.sent] == ["e-0", "e-1", "e-2"]
        await join.checkpoint()
        assert len(redis.outbox()) == 3, "nothing acknowledged: nothing trimmed"
        producer.acknowledge(2)
        producer.deliveries[2].set_exception(RuntimeError("broker gone"))
        await join.checkpoint()
        assert [entry["seq"] for entry in redis.outbox()] == [3], "the undelivered one stays"

    asyncio.run(scenario())


def test_an_undelivered_record_is_sent_again_by_the_next_checkpoint_then_trimmed(config):
    """Not only at the next claim: while it waits, the Redis outbox cannot be trimmed past it."""
    redis, producer = FakeRedis(), Producer()
    join = joiner(config, redis, producer)

    async def scenario() -> None:
        state = await join.owned(0)
        assert await join.served(state, 0, 0, served("e-0"), [(b"dlq-key", b"dead letter")])
        assert await join.served(state, 0, 1, served("e-1"), [])
        producer.acknowledge(1)  # the dead letter; its prediction's delivery fails
        producer.deliveries[1].set_exception(aiokafka.errors.KafkaTimeoutError())
        producer.acknowledge(3)
        await join.checkpoint()
        assert [entry["seq"] for entry in redis.outbox()] == [1, 2], "kept, and sent again"
        assert [topic for topic, _, _ in producer.sent] == [
            TOPICS.dlq,
            TOPICS.predictions,
            TOPICS.predictions,
            TOPICS.predictions,
        ], "only the record that failed"
        producer.acknowledge(4)
        await join.checkpoint()
        assert redis.outbox() == []

    asyncio.run(scenario())


def test_events_to_score_go_in_batch_records_unless_one_per_record_is_asked(monkeypatch):
    FakeKafkaProducer.instances = []
    monkeypatch.setattr(producer_module, "KafkaProducer", FakeKafkaProducer)
    events = [unlabeled(f"e-{i}") for i in range(3)]
    with EventProducer("broker:9092", unlabeled_topic="u", batch_linger=60) as batched:
        for event in events:
            batched.send_unlabeled(event)
            batched.send({**event, "label": True})
    with EventProducer("broker:9092", unlabeled_topic="u", batch_events=1) as single:
        for event in events:
            single.send_unlabeled(event)
    first, second = FakeKafkaProducer.instances
    assert sorted(topic for topic, _, _ in first.sent) == ["driftline.events.labeled", "u"]
    [(_, key, value)] = [record for record in first.sent if record[0] == "u"]
    assert key == b"sea"
    assert [entry.decoded.event_id for entry in decode_unlabeled_record(value)] == [
        "e-0",
        "e-1",
        "e-2",
    ]
    assert [orjson.loads(value)["event_id"] for _, _, value in second.sent] == ["e-0", "e-1", "e-2"]


def _topics_of(producer: Producer) -> list[str]:
    return [topic for topic, _, _ in producer.sent]


def test_a_new_owner_publishes_again_only_what_the_topics_do_not_hold(config):
    """A crash after delivery, before the trim: the recall finds the records past the mark (I8);
    a record whose delivery failed is sent again, one never delivered too."""
    redis, producer = FakeRedis(), Producer()
    first = joiner(config, redis, producer)

    async def scenario() -> None:
        state = await first.owned(0)
        assert await first.served(state, 0, 0, served("e-0"), [(b"t/0/0", b"dead letter 0")])
        producer.acknowledge()
        await first.checkpoint()  # trims entry 1 and marks the topics' ends
        assert redis.outbox() == [] and redis.marks_saved == 2
        assert await first.served(state, 0, 1, served("e-1"), [(b"t/0/1", b"dead letter 1")])
        assert await first.served(state, 0, 2, served("e-2"), [(b"t/0/2", b"dead letter 2")])
        producer.acknowledge(5)  # entry 2 delivered, and entry 3's dead letter
        producer.deliveries[5].set_exception(aiokafka.errors.KafkaTimeoutError())
        # SIGKILL: no checkpoint. The next owner reads the topics from the mark.
        sent = len(producer.sent)
        second = joiner(config, redis, producer)
        again = await second.owned(0)
        assert producer.reads[-1] == {(TOPICS.dlq, 0): 1, (TOPICS.predictions, 0): 1}
        assert producer.sent[sent:] == [producer.sent[5]], "only e-2's prediction"
        assert [entry.seq for entry in again.in_flight] == [2, 3]
        producer.acknowledge()
        await second.checkpoint()
        assert redis.outbox() == []
        third = joiner(config, redis, producer)
        await third.owned(0)
        assert len(producer.sent) == sent + 1, "nothing left to publish"

    asyncio.run(scenario())
    for topic in (TOPICS.dlq, TOPICS.predictions):
        assert len(producer.topics[topic]) == len(set(producer.topics[topic])) == 3, topic


def test_an_outbox_without_a_mark_is_published_again_once_then_marked(config):
    """Redis state written before marks: no mark is no recall (every entry is sent again, as
    before), and a mark at the topics' ends is saved at once, so a second crash sends none."""
    redis, producer = FakeRedis(), Producer()
    old = joiner(config, redis, producer, recall=False)

    async def scenario() -> None:
        state = await old.owned(0)
        assert await old.served(state, 0, 0, served("e-0"), [(b"t/0/0", b"dead letter 0")])
        producer.acknowledge()
        assert not any(key.endswith(":mark") for key in redis.values)
        upgraded = joiner(config, redis, producer)
        await upgraded.owned(0)
        assert producer.reads == [{}], "nothing read without a mark"
        assert _topics_of(producer) == [TOPICS.dlq, TOPICS.predictions] * 2, "sent again once"
        producer.acknowledge()
        producer.unreadable = 2  # the claim waits for the broker rather than guess
        await joiner(config, redis, producer).owned(0)  # a crash before any checkpoint
        assert producer.unreadable == 0
        assert producer.reads[-1] == {(TOPICS.dlq, 0): 1, (TOPICS.predictions, 0): 1}
        assert len(producer.sent) == 4, "the copies past the mark are found"

    asyncio.run(scenario())


def test_records_behind_a_refused_one_are_held_and_follow_it_in_order(config):
    """I9: a send the producer refuses (no sequence number taken) could be passed by a later
    record of the same partition; the join's labeled records must reach the trainer in order.
    A refusal while sending again holds the rest until the next checkpoint."""
    redis, producer = FakeRedis(), Producer()
    join = joiner(config, redis, producer)

    async def scenario() -> None:
        state = await join.owned(0)
        producer.refusing = 1
        assert await join.served(state, 0, 0, served("e-0", "e-1"), [])
        assert await join.served(state, 0, 1, served("e-2"), [])
        assert producer.sent == []
        producer.refusing = 2  # still away at the first checkpoint, and the second
        await join.checkpoint()
        await join.checkpoint()
        assert producer.sent == [] and producer.refusing == 0
        await join.checkpoint()
        assert [orjson.loads(v)["event_id"] for _, _, v in producer.sent] == ["e-0", "e-1", "e-2"]
        producer.acknowledge()
        await join.checkpoint()
        assert redis.outbox() == []

    asyncio.run(scenario())
