"""Batch records of events to score, on the real broker and Redis, across SIGKILLs of the scorer.

Events go in batch records (kcat's JSON arrays), with some single-event records among them and a
bad event inside some batches; outcomes are single records, a tenth of them before their event.
Whatever the kills interrupt, every event gets one committed prediction, published once, every
outcome one join as the trainer keeps it, and every bad event its own dead letter, with its index,
published once: a new owner does not publish again what the topics hold past its partition's mark
(streams.workers.join, step 1's recall).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from pipeline import Deployment, wait_for
from registry_helpers import TopicReader, kept_by_a_trainer, train_sea, unlabeled_sea_events

from streams.admin import ensure_topics
from streams.contract import decode_dead_letter, encode_batch, encode_outcome

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EVENTS = 6_000
KILLS = 3
RECORD_EVENTS = 40
EVENTS_PER_SECOND = 200
BAD_EVENTS = {
    "missing_field": lambda n: {"event_id": f"bad-{n}", "model": "sea", "ts": 1},
    "unknown_model": lambda n: {"event_id": f"bad-{n}", "model": "other", "ts": 1, "features": {}},
    "wrong_type": lambda n: {"event_id": f"bad-{n}", "model": "sea", "ts": 1, "features": []},
}

Plan = list[tuple[float, str, bytes]]


def _plan(events: list[dict[str, Any]], rng: random.Random) -> tuple[Plan, set[tuple]]:
    """When to send each record (seconds from the start), to which topic; and the dead letters
    expected: (index in its record, reason code, event id)."""
    plan: Plan = []
    expected_letters: set[tuple] = set()
    for number, first in enumerate(range(0, len(events), RECORD_EVENTS)):
        chunk = [
            {k: v for k, v in event.items() if k != "label"}
            for event in events[first : first + RECORD_EVENTS]
        ]
        at = first / EVENTS_PER_SECOND
        if number % 10 == 9:  # kcat's single-event records among the batches
            plan += [(at, "unlabeled", orjson.dumps(event)) for event in chunk]
        else:
            if number % 4 == 1:
                code = list(BAD_EVENTS)[number % 3]
                index = rng.randrange(len(chunk) + 1)
                chunk.insert(index, BAD_EVENTS[code](number))
                expected_letters.add((index, code, f"bad-{number}"))
            plan.append((at, "unlabeled", encode_batch([orjson.dumps(e) for e in chunk])))
    for position, event in enumerate(events):
        at = position / EVENTS_PER_SECOND
        delay = -rng.uniform(0.05, 0.5) if rng.random() < 0.1 else rng.uniform(0.5, 3)
        outcome = {"event_id": event["event_id"], "model": "sea", "ts": 1, "label": event["label"]}
        plan.append((max(at + delay, 0), "outcomes", encode_outcome(outcome)))
    return sorted(plan, key=lambda item: item[0]), expected_letters


def _send(deployment: Deployment, plan: Plan) -> None:
    topics = {"unlabeled": deployment.topics.unlabeled, "outcomes": deployment.topics.outcomes}
    producer = KafkaProducer(acks="all", **deployment.kafka)
    start = time.monotonic()
    for at, topic, value in plan:
        wait = at - (time.monotonic() - start)
        if wait > 0:
            time.sleep(wait)
        producer.send(topics[topic], key=b"sea", value=value)
    producer.flush()
    producer.close()


def _live_report(deployment: Deployment) -> dict[str, Any]:
    reader = TopicReader(deployment.env, deployment.topics.metrics)
    time.sleep(6)  # at least one report after the last commit
    reports = [r for r in reader.read(2.0) if r.get("kind") == "live" and r["version"] == 1]
    reader.close()
    return reports[-1] if reports else {}


def test_batch_records_are_scored_and_joined_exactly_once_across_sigkills(driftline_env, spawn):
    train_sea(driftline_env, spawn, versions=1, events=2_000)
    deployment = Deployment(driftline_env)
    ensure_topics(
        deployment.topics, deployment.kafka, partitions=deployment.config().worker.partitions
    )
    rng = random.Random(13)
    events = [e for _, e in zip(range(EVENTS), unlabeled_sea_events(seed=29), strict=False)]
    plan, expected_letters = _plan(events, rng)
    event_ids = Counter(event["event_id"] for event in events)

    # A killed scorer's partitions move to its successor after this long.
    env = {**driftline_env, "DRIFTLINE__worker__session_timeout": "6"}
    scorer = spawn("score", "--config", "examples/sea.toml", env=env, name="scorer-0")
    sender = threading.Thread(target=_send, args=(deployment, plan))
    sender.start()
    for kills in range(1, KILLS + 1):
        # Each kill falls while records arrive, a moment after the scorer claimed the joins.
        wait_for(
            lambda log=Path(scorer.log_path): "claimed joins" in log.read_text(),
            timeout=60,
            what="the scorer claiming its partitions",
        )
        time.sleep(rng.uniform(0.2, 1.5))
        assert sender.is_alive(), "records are still being sent"
        scorer.send_signal(signal.SIGKILL)
        scorer.wait()
        scorer = spawn("score", "--config", "examples/sea.toml", env=env, name=f"scorer-{kills}")
    sender.join()

    labeled = TopicReader(driftline_env, deployment.topics.labeled)
    joined = [
        record
        for record in labeled.wait_until(
            lambda records: (
                len(set(kept_by_a_trainer([r for r in records if "join" in r]))) >= len(event_ids)
            ),
            timeout=180,
            what="a join of every event",
        )
        if "join" in record
    ]
    labeled.close()
    assert Counter(kept_by_a_trainer(joined)) == event_ids, "each outcome joined once"

    report = wait_for(
        lambda: (r := _live_report(deployment)).get("joined") == len(event_ids) and r,
        timeout=90,
        what="the live metrics of every join",
    )
    assert report["served"] == len(event_ids), "each event's prediction committed once"

    predictions = TopicReader(driftline_env, deployment.topics.predictions)
    predictions.wait_until(
        lambda records: {p["event_id"] for p in records} >= set(event_ids),
        timeout=60,
        what="a prediction of every event",
    )
    time.sleep(2)  # any copy a claim published would be read by now
    published = Counter(p["event_id"] for p in predictions.read())
    predictions.close()
    twice = {event_id: n for event_id, n in published.items() if n > 1}
    assert published.keys() == event_ids.keys()
    assert not twice, f"{len(twice)} events predicted more than once, e.g. {list(twice)[:3]}"

    letters = TopicReader(driftline_env, deployment.topics.dlq).wait_until(
        lambda records: (
            len({(r["source"]["offset"], r["source"]["index"]) for r in records})
            >= len(expected_letters)
        ),
        timeout=60,
        what="the dead letters of the bad events",
    )
    refused: Counter[tuple] = Counter()
    for letter in (decode_dead_letter(orjson.dumps(record)) for record in letters):
        event_id = orjson.loads(letter["original"])["event_id"]
        refused[(letter["source"]["index"], letter["reason_code"], event_id)] += 1
    assert refused.keys() == expected_letters
    assert refused == Counter(expected_letters), "each dead letter published once"
    assert scorer.poll() is None
