"""Batch records: several events of one model in one record, each learned or refused alone.

The contract's decoding, the dead letter of one event of a batch, the trainer runtime over the
in-memory fakes of ``test_ledger`` (exactly-once through crashes between batch records), and the
producer SDK's batching over the fake KafkaProducer of ``test_event_producer``. The real broker
is covered by tests/integration/test_faults.py and test_bad_input.py.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from test_event_producer import FakeKafkaProducer
from test_ledger import LABELED, Event, Message, Worker, fakes, run, sea_events

import streams.sdk.producer as producer_module
from streams.contract import (
    InvalidEvent,
    LabeledEvent,
    ReasonCode,
    decode_labeled_record,
    encode_batch,
    encode_event,
    event_position,
    record_coordinate,
)
from streams.sdk.producer import DeliveryError, EventProducer


def labeled(event_id: str = "e-1", **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "model": "sea",
        "ts": 1,
        "features": {"x": 1.0},
        "label": True,
    } | overrides


def batched(events: list[Event], size: int) -> list[Event]:
    """The same events, ``size`` to a record, at offsets 0, 1, 2..."""
    return [
        Event(
            Message(
                LABELED,
                offset,
                b"sea",
                encode_batch([event.message.value for event in events[start : start + size]]),
            )
        )
        for offset, start in enumerate(range(0, len(events), size))
    ]


def test_a_batch_record_decodes_to_one_entry_per_event_with_its_index() -> None:
    raw = orjson.dumps([labeled("a"), labeled("b", label=None), "c", labeled("d")])
    entries = decode_labeled_record(raw)
    assert [entry.index for entry in entries] == [0, 1, 2, 3]
    decoded = [entry.decoded for entry in entries]
    assert [e.event_id for e in decoded if isinstance(e, LabeledEvent)] == ["a", "d"]
    assert [e.code for e in decoded if isinstance(e, InvalidEvent)] == [
        ReasonCode.WRONG_TYPE,
        ReasonCode.NOT_OBJECT,
    ]
    assert entries[2].original(raw) == b'"c"'


def test_single_event_records_decode_as_before_pretty_printed_or_not() -> None:
    for raw in (orjson.dumps(labeled()), orjson.dumps(labeled(), option=orjson.OPT_INDENT_2)):
        (entry,) = decode_labeled_record(raw)
        assert entry.index is None and isinstance(entry.decoded, LabeledEvent)
        assert entry.original(raw) == raw


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"[]", ReasonCode.EMPTY_FIELD),
        (b"[{]", ReasonCode.NOT_JSON),
        (b"7", ReasonCode.NOT_OBJECT),
        (None, ReasonCode.NOT_JSON),
    ],
)
def test_a_record_refused_as_a_whole_raises(raw: bytes | None, code: ReasonCode) -> None:
    with pytest.raises(InvalidEvent) as refused:
        decode_labeled_record(raw)
    assert refused.value.code == code


def test_positions_order_the_events_of_a_partition_and_give_back_their_record() -> None:
    positions = [event_position(offset, index) for offset in (0, 1, 2) for index in (None, 1, 2)]
    assert positions == sorted(set(positions))
    assert record_coordinate(event_position(41, 17)) == (41, 17)


def test_a_bad_event_in_a_batch_is_dead_lettered_alone_with_its_index() -> None:
    checkpoints, broker, artifacts = fakes()
    worker = Worker(checkpoints, broker, artifacts)
    events = [
        labeled("good-0"),
        labeled("bad-label", label=[1]),
        labeled("good-2"),
        labeled("other-model", model="other"),
        labeled("good-4"),
    ]
    value = orjson.dumps(events)
    run(worker.feed([Event(Message(LABELED, 5, b"sea", value))]))
    letters = broker.dead_letters()
    assert [(d["reason_code"], d["source"]["index"]) for d in letters] == [
        ("wrong_type", 1),
        ("key_mismatch", 3),
    ]
    assert [orjson.loads(d["original"])["event_id"] for d in letters] == [
        "bad-label",
        "other-model",
    ]
    assert [key for key, _ in broker.sent[LABELED.topic.replace("labeled", "dlq")]] == [
        f"{LABELED.topic}/0/5/1".encode(),
        f"{LABELED.topic}/0/5/3".encode(),
    ]
    trainer = worker.trainer()
    assert trainer.events == 3
    assert trainer.last_position(f"{LABELED.topic}[0]") == event_position(5, 4)


def test_a_crash_between_batch_records_learns_every_event_exactly_once() -> None:
    events = sea_events(400)
    baseline = Worker(*fakes())
    run(baseline.feed(events))
    expected = baseline.trainer().report()

    records = batched(events, 7)
    checkpoints, broker, artifacts = fakes()
    for crash_after in (3, 7, 8, 23, 40, len(records)):
        worker = Worker(checkpoints, broker, artifacts, checkpoint_every=40)
        resume = checkpoints.cursor.get((LABELED.topic, LABELED.partition), -1) + 1
        run(worker.feed([Event(r.message) for r in records[: max(crash_after, resume)]]))
    run(worker.runtime.ledger.checkpoint())
    assert worker.trainer().report() == expected
    versions = [record.version for record in broker.records()]
    assert versions == sorted(set(versions))
    # A promotion inside a batch names the event that caused it, not its record.
    promoting = broker.records()[0].lineage
    assert promoting["events"] == 50
    assert record_coordinate(promoting["last_offset"]) == divmod(49, 7)


def test_a_batch_counts_its_events_towards_checkpoints_and_backpressure() -> None:
    checkpoints, broker, artifacts = fakes()
    worker = Worker(checkpoints, broker, artifacts, checkpoint_every=25)
    records = batched(sea_events(40), 10)
    run(worker.feed(records[:2]))
    assert (worker.runtime.ledger.since_checkpoint, worker.runtime.ledger.unacked) == (20, 20)
    run(worker.feed(records[2:3]))
    assert checkpoints.cursor[(LABELED.topic, 0)] == 2, "30 events >= checkpoint_every"
    assert all(record.acked for record in records[:3])


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> type[FakeKafkaProducer]:
    FakeKafkaProducer.instances = []
    monkeypatch.setattr(producer_module, "KafkaProducer", FakeKafkaProducer)
    monkeypatch.delenv("DRIFTLINE_TOPIC_PREFIX", raising=False)
    return FakeKafkaProducer


def sent_events(kafka: FakeKafkaProducer) -> list[list[str]]:
    """Per record sent, its events' ids."""
    return [
        [
            entry.decoded.event_id
            for entry in decode_labeled_record(value)
            if isinstance(entry.decoded, LabeledEvent)
        ]
        for _, _, value in kafka.sent
    ]


def test_the_sdk_batches_each_models_events_up_to_its_caps(
    fake_kafka: type[FakeKafkaProducer],
) -> None:
    with EventProducer("broker:9092", batch_events=3, batch_linger=60) as producer:
        for n in range(7):
            producer.send(labeled(f"s{n}"))
        producer.send(labeled("o0", model="other"))
        producer.flush()
        kafka = fake_kafka.instances[0]
        assert sent_events(kafka) == [["s0", "s1", "s2"], ["s3", "s4", "s5"], ["s6"], ["o0"]]
        assert [key for _, key, _ in kafka.sent] == [b"sea"] * 3 + [b"other"]
        assert kafka.sent[2][2].startswith(b"{"), "a batch of one is the plain event"

    one_event = len(encode_event(labeled("s0")))
    with EventProducer("broker:9092", batch_bytes=2 * one_event + 2, batch_linger=60) as producer:
        for n in range(5):
            producer.send(labeled(f"s{n}"))
        producer.flush()
    assert sent_events(fake_kafka.instances[1]) == [["s0", "s1"], ["s2", "s3"], ["s4"]]


def test_the_sdk_sends_single_event_records_when_asked(
    fake_kafka: type[FakeKafkaProducer],
) -> None:
    with EventProducer("broker:9092", batch_events=1) as producer:
        producer.send(labeled("a"))
        producer.send(labeled("b"))
        assert sent_events(fake_kafka.instances[0]) == [["a"], ["b"]]


def test_a_batch_is_sent_after_its_linger_without_a_flush(
    fake_kafka: type[FakeKafkaProducer],
) -> None:
    with EventProducer("broker:9092", batch_linger=0.01) as producer:
        producer.send(labeled("a"))
        producer.send(labeled("b"))
        deadline = time.monotonic() + 5
        while not fake_kafka.instances[0].sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sent_events(fake_kafka.instances[0]) == [["a", "b"]]


def test_a_failed_batch_reports_every_event_in_it(fake_kafka: type[FakeKafkaProducer]) -> None:
    producer = EventProducer("broker:9092", batch_linger=60)
    delivered = [producer.send(labeled("a")), producer.send(labeled("b"))]
    fake_kafka.instances[0].fail_with = TimeoutError("test")
    with pytest.raises(DeliveryError) as caught:
        producer.flush()
    assert [failure.event_id for failure in caught.value.failures] == ["a", "b"]
    assert all(future.failed() for future in delivered)
    producer.close()


def test_a_batch_the_client_refuses_to_send_is_reported_not_lost(
    fake_kafka: type[FakeKafkaProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = EventProducer("broker:9092", batch_linger=0.01)
    delivered = producer.send(labeled("a"))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise BufferError("test: the client's buffer is full")

    monkeypatch.setattr(fake_kafka.instances[0], "send", refuse)
    deadline = time.monotonic() + 5
    while not delivered.is_done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert delivered.failed(), "the lingerer sends it, and must not die silently"
    with pytest.raises(DeliveryError) as caught:
        producer.flush()
    assert [failure.event_id for failure in caught.value.failures] == ["a"]
    producer.close()
