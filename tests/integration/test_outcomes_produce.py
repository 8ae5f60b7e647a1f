"""Outcomes on the real broker: the SDK's ``send_outcome`` and ``driftline produce --outcomes``."""

from __future__ import annotations

import time
from collections.abc import Callable

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from pipeline import Deployment

from streams.contract import Outcome, decode_outcome, decode_unlabeled_record
from streams.sdk import replay
from streams.sdk.outcomes import OutcomeOrder, OutcomeTiming
from streams.sdk.producer import EventProducer

EVENTS = 400
SEED = 9


def read_topic(
    bootstrap: str,
    topic: str,
    expected: int,
    *,
    deadline_s: float = 60.0,
    linger_s: float = 2.0,
    events_in: Callable[[ConsumerRecord], int] = lambda record: 1,
) -> list[ConsumerRecord]:
    """Every record of ``topic``: records of at least ``expected`` events (``events_in`` says
    how many a record holds), plus any that follow within ``linger_s`` (so that extras are seen
    too)."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    records: list[ConsumerRecord] = []
    events = 0
    deadline = time.monotonic() + deadline_s
    try:
        while events < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
                events += sum(map(events_in, batch))
        linger = time.monotonic() + linger_s
        while time.monotonic() < linger:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_send_outcome_reaches_the_outcomes_topic_keyed_by_model(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic = unique("outcomes")
    sent = [
        Outcome(f"e-{n}", ("sea", "churn")[n % 2], 1_795_000_000.0 + n, n % 3) for n in range(50)
    ]
    with EventProducer(kafka_bootstrap, outcomes_topic=topic) as producer:
        for outcome in sent:
            producer.send_outcome(outcome)
        producer.flush(timeout=30)
    records = read_topic(kafka_bootstrap, topic, len(sent), linger_s=0.5)
    assert all(record.key == decode_outcome(record.value).model.encode() for record in records)
    assert sorted((decode_outcome(r.value) for r in records), key=lambda o: o.ts) == sent


def test_produce_sends_every_outcome_but_the_missing_ones_after_or_before_its_event(
    driftline_env, driftline_cli
) -> None:
    deployment = Deployment(driftline_env)
    started = time.monotonic()
    result = driftline_cli(
        "produce", "--synthetic", "sea", "--events", str(EVENTS), "--seed", str(SEED),
        "--rate", "400", "--outcomes", "--outcome-delay", "0.5-2",
        "--outcomes-before", "0.1", "--outcomes-missing", "0.05", "--quiet",
        env=driftline_env, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr

    timing = OutcomeTiming(delay=(0.5, 2.0), before=0.1, missing=0.05, seed=SEED)
    draw = timing.plan()
    orders = [draw()[0] for _ in range(EVENTS)]
    missing = {f"sea-{n}" for n, order in enumerate(orders) if order is OutcomeOrder.MISSING}
    before = sum(order is OutcomeOrder.BEFORE for order in orders)
    assert missing and before
    assert result.stderr.strip().endswith(
        f"sent {EVENTS} unlabeled events for sea and {EVENTS - len(missing)} outcomes "
        f"({before} before their event, {len(missing)} never sent)"
    )
    # One second of events, then at most the longest delay: no thread or timer left behind.
    assert elapsed < 30

    bootstrap = driftline_env["KAFKA_BOOTSTRAP_SERVERS"]
    labels = {
        event["event_id"]: event["label"]
        for event in replay.from_drift(
            "sea", model="sea", events=EVENTS, drift_at=EVENTS // 2, seed=SEED
        )
    }
    outcomes = read_topic(bootstrap, deployment.topics.outcomes, EVENTS - len(missing))
    decoded = [decode_outcome(record.value) for record in outcomes]
    assert all(record.key == b"sea" for record in outcomes)
    assert len(decoded) == EVENTS - len(missing), "each outcome once"
    assert {o.event_id: o.label for o in decoded} == {
        event_id: label for event_id, label in labels.items() if event_id not in missing
    }
    # Events to score go in the SDK's batch records.
    records = read_topic(
        bootstrap,
        deployment.topics.unlabeled,
        EVENTS,
        linger_s=0.5,
        events_in=lambda record: len(decode_unlabeled_record(record.value)),
    )
    events = [entry.decoded for r in records for entry in decode_unlabeled_record(r.value)]
    assert sorted(event.event_id for event in events) == sorted(labels)
    assert all(b'"label"' not in record.value for record in records)
