"""A driftline deployment on a 3-node cluster, a stream through it, and its end state.

What :mod:`test_broker_faults` runs once per fault, as Kafka's own system tests do
(``tests/kafkatest/tests/core/transactions_test.py``, ``streams_broker_bounce_test.py`` in
apache/kafka): workers run, records flow, a node is SIGKILLed at a seeded point, and the end
state is compared with what must come out whatever the fault.

The stream (:func:`plan_stream`) mixes everything a worker reads: labeled events in single-event
records (kcat's form) and in the SDK's batch records, malformed records and malformed events
inside batches, events to score and their outcomes, some before their event and most a little
after it, so that the scorer joins them into labeled events the trainer learns.

Joined labels land on the labeled topic between the producers' records wherever the scorer
happened to publish them, so no fixed reference exists for the registry: the undisturbed run of
the same events is a trainer run afterwards, without any fault, on a copy of the labeled log as
the disturbed run left it (:meth:`FaultRun.undisturbed_registry`).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pipeline import Deployment, sea_events, wait_for
from registry_helpers import kept_by_a_trainer

from streams.admin import ensure_topics
from streams.contract import decode_dead_letter, encode_batch, encode_event, encode_outcome

LABELED = 12_000
DRIFT_AT = 6_000
TO_SCORE = 1_500
RATE = 1_500
"""Labeled events per second: the stream lasts 8 s, long enough for a fault to fall inside."""
BATCH = 50


@dataclass(frozen=True)
class Send:
    at: float
    """Seconds after the start (events to score wait for the first version: see ``Sender``)."""
    topic: str
    """``labeled``, ``unlabeled`` or ``outcomes``."""
    value: bytes


@dataclass
class Stream:
    """What a run sends, and what must come out of it."""

    sends: list[Send]
    labeled_events: int
    to_score: list[str]
    bad: Counter[bytes] = field(default_factory=Counter)
    """The original bytes of every record or event that must be dead-lettered, once each."""


def plan_stream(seed: int) -> Stream:
    rng = random.Random(seed)
    events = sea_events(LABELED, drift_at=DRIFT_AT, seed=seed)
    sends: list[Send] = []
    bad: Counter[bytes] = Counter()
    for number, first in enumerate(range(0, LABELED, BATCH)):
        at = first / RATE
        chunk = [encode_event(event) for event in events[first : first + BATCH]]
        if number % 3 == 0:  # single-event records, one of them not JSON now and then
            sends += [Send(at, "labeled", value) for value in chunk]
            if number % 9 == 0:
                value = f"not json {number}".encode()
                sends.append(Send(at, "labeled", value))
                bad[value] += 1
        else:
            if number % 4 == 1:  # a batch with one event that breaks the contract
                value = orjson.dumps({"event_id": f"bad-{number}", "model": "sea", "ts": 1})
                chunk.insert(rng.randrange(len(chunk) + 1), value)
                bad[value] += 1
            sends.append(Send(at, "labeled", encode_batch(chunk)))
    to_score = [
        {**event, "event_id": f"u-{seed}-{n}"}
        for n, event in enumerate(sea_events(TO_SCORE, drift_at=TO_SCORE, seed=seed + 1))
    ]
    score_start, score_rate = 1.0, TO_SCORE / 6
    for n, first in enumerate(range(0, TO_SCORE, 10)):
        at = score_start + first / score_rate
        chunk = [
            orjson.dumps({k: v for k, v in e.items() if k != "label"})
            for e in to_score[first : first + 10]
        ]
        if n % 15 == 7:
            value = orjson.dumps(
                {"event_id": f"bad-u-{n}", "model": "sea", "ts": 1, "features": []}
            )
            chunk.append(value)
            bad[value] += 1
        sends.append(Send(at, "unlabeled", encode_batch(chunk)))
    for position, event in enumerate(to_score):
        at = score_start + position / score_rate
        delay = -rng.uniform(0.05, 0.3) if rng.random() < 0.1 else rng.uniform(0.3, 2.0)
        outcome = {"event_id": event["event_id"], "model": "sea", "ts": 1, "label": event["label"]}
        sends.append(Send(max(at + delay, score_start), "outcomes", encode_outcome(outcome)))
    sends.sort(key=lambda send: send.at)
    good_labeled = LABELED
    return Stream(sends, good_labeled, [e["event_id"] for e in to_score], bad)


class Sender(threading.Thread):
    """Sends a stream on schedule with an idempotent ``acks=all`` producer, as a careful user's
    service would: a failover holds its sends back, none is lost or written twice."""

    def __init__(self, deployment: Deployment, stream: Stream, first_version: Callable[[], bool]):
        super().__init__(daemon=True)
        self.deployment, self.stream, self.first_version = deployment, stream, first_version
        self.error: BaseException | None = None
        self.sent = 0

    def run(self) -> None:
        try:
            self._send()
        except BaseException as error:  # reported by the test, not lost in the thread
            self.error = error

    def _send(self) -> None:
        topics = self.deployment.topics
        names = {
            "labeled": topics.labeled,
            "unlabeled": topics.unlabeled,
            "outcomes": topics.outcomes,
        }
        producer = KafkaProducer(
            acks="all", enable_idempotence=True, max_request_size=2**21, **self.deployment.kafka
        )
        start = time.monotonic()
        waited_for_version = False
        for send in self.stream.sends:
            if send.topic != "labeled" and not waited_for_version:
                # The scorer needs a version to serve: events to score follow the first one.
                wait_for(self.first_version, timeout=120, what="v1", every=0.2)
                waited_for_version = True
            pause = send.at - (time.monotonic() - start)
            if pause > 0:
                time.sleep(pause)
            producer.send(names[send.topic], key=b"sea", value=send.value)
            self.sent += 1
        producer.flush(timeout=300)
        producer.close()


def copy_topic(kafka: dict[str, Any], source: str, target: str) -> int:
    """Copy every record of ``source`` to the same partition of ``target``, in order (the same
    offsets, on an empty ``target``); returns how many."""
    consumer = KafkaConsumer(enable_auto_commit=False, **kafka)
    producer = KafkaProducer(acks="all", enable_idempotence=True, max_request_size=2**21, **kafka)
    partitions = [TopicPartition(source, p) for p in sorted(consumer.partitions_for_topic(source))]
    ends = consumer.end_offsets(partitions)
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    copied = 0
    while any(consumer.position(tp) < ends[tp] for tp in partitions):
        for tp, messages in consumer.poll(timeout_ms=1000).items():
            for message in messages:
                producer.send(target, key=message.key, value=message.value, partition=tp.partition)
                copied += 1
    producer.flush()
    producer.close()
    consumer.close()
    return copied


def registry_summary(deployment: Deployment) -> list[tuple[Any, ...]]:
    """What must be the same in every run of the same events, in registry order: each record
    (versions, drift notices), its kind, candidate, evidence, artifact SHA-256 and lineage (the
    positions learned and their digests), the labeled topic's name left out of the lineage."""
    topic = deployment.topics.labeled
    return [
        (
            r.version,
            r.kind,
            r.candidate["name"],
            r.previous_version,
            r.evidence,
            r.artifact.sha256,
            orjson.loads(orjson.dumps(r.lineage).replace(topic.encode(), b"<labeled>")),
        )
        for r in deployment.registry(notices=True)
    ]


def read_all(deployment: Deployment, topic: str) -> list[Any]:
    """Every record value of ``topic`` (all partitions, from the beginning)."""
    consumer = KafkaConsumer(enable_auto_commit=False, **deployment.kafka)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    ends = consumer.end_offsets(partitions)
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    values = []
    while any(consumer.position(tp) < ends[tp] for tp in partitions):
        for messages in consumer.poll(timeout_ms=1000).values():
            values += [message.value for message in messages]
    consumer.close()
    return values


def check_end_state(deployment: Deployment, stream: Stream) -> None:
    """Every event learned once, predicted once, joined once; every bad record or event
    dead-lettered once."""
    trainer = deployment.wait_until_learned(
        "sea", stream.labeled_events + len(stream.to_score), timeout=240
    )
    expected = stream.labeled_events + len(stream.to_score)
    assert trainer.learned == {"steady": expected, "agile": expected}, "each event learned once"

    labeled = [
        orjson.loads(v)
        for v in read_all(deployment, deployment.topics.labeled)
        if v.startswith(b"{")
    ]
    joined = [record for record in labeled if "join" in record]
    assert Counter(kept_by_a_trainer(joined)) == Counter(stream.to_score), (
        "each outcome joined once"
    )

    predictions = Counter(
        orjson.loads(v)["event_id"] for v in read_all(deployment, deployment.topics.predictions)
    )
    assert predictions == Counter(stream.to_score), "each event predicted once"

    letters = Counter(
        decode_dead_letter(value)["original"]
        for value in read_all(deployment, deployment.topics.dlq)
    )
    assert letters == stream.bad, "each bad record or event dead-lettered once"


def prepare_topics(deployment: Deployment) -> None:
    ensure_topics(
        deployment.topics, deployment.kafka, partitions=deployment.config().worker.partitions
    )
