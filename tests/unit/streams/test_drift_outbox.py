"""Drift and action notices through the outbox and the runtime, exactly once (fakes for Kafka and
Redis; tests/integration/test_drift_sigkill.py runs the real ones)."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import pytest
import test_ledger
from test_ledger import KEY, TOPICS, Event, Worker, fakes, run, sea_events

from streams.registry.records import NO_ARTIFACT, RecordKind, serving_state
from streams.workers.invariants import InvariantViolated
from streams.workers.outbox import Outbox
from streams.workers.refits import RefitPool
from trainers.actions import Notice
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

DRIFTING = {
    **test_ledger.SPEC,
    "candidates": [
        {"name": "lr", "river": "StandardScaler | LogisticRegression"},
        {
            "name": "win",
            "sklearn_window": "LogisticRegression",
            "window_events": 300,
            "refit_every": 300,
            "refit_lag": 40,
        },
    ],
    "champion": "lr",
    "drift": {"actions": ["reset", "refit"], "min_events_between_actions": 200},
}


def notice(sequence: int, model: str = "sea") -> Notice:
    return Notice(
        model, sequence, "drift", "lr", "ADWIN fired", {"detector": "ADWIN"}, {"event": sequence}
    )


def outbox(broker, artifacts) -> Outbox:
    return Outbox(
        send=broker.send,
        store_artifact=artifacts.store,
        holds_artifact=artifacts.holds,
        registry_topic=TOPICS.registry,
        signing_key=KEY,
        redis_prefix="test:",
        store_errors=(test_ledger.redis.RedisError,),
        delivery_errors=test_ledger.KAFKA_ERRORS,
    )


def test_a_notice_is_published_once_as_a_signed_record_that_serves_nothing() -> None:
    _, broker, artifacts = fakes()
    box = outbox(broker, artifacts)
    run(box.notify(notice(1), version=3))
    run(box.notify(notice(1), version=3))  # a replay after a crash makes it again
    (record,) = broker.records()
    record.verify(KEY)
    assert (record.kind, record.version, record.notice_sequence) == (RecordKind.DRIFT, 3, 1)
    assert record.artifact == NO_ARTIFACT and record.evidence["detector"] == "ADWIN"
    assert serving_state([record]) == {}
    assert box.noticed == {"sea": 1} and box.published == {}


def test_notices_the_registry_holds_are_not_published_again() -> None:
    _, broker, artifacts = fakes()
    first = outbox(broker, artifacts)
    run(first.notify(notice(1), version=0))
    run(first.notify(notice(2), version=0))
    restarted = outbox(broker, artifacts)
    restarted.note_published(broker.records())
    run(restarted.notify(notice(2), version=0))
    run(restarted.notify(notice(3), version=0))
    assert [r.notice_sequence for r in broker.records()] == [1, 2, 3]


def test_sending_a_notice_twice_breaks_i5() -> None:
    _, broker, artifacts = fakes()
    box = outbox(broker, artifacts)
    run(box.notify(notice(1), version=0))
    (record,) = broker.records()
    with pytest.raises(InvariantViolated, match="I5"):
        run(box._publish(record))


def test_a_notice_waits_behind_a_promotion_that_waits_for_redis() -> None:
    _, broker, artifacts = fakes()
    box = outbox(broker, artifacts)
    trainer = ModelTrainer(ModelSpec.from_dict("sea", test_ledger.SPEC))
    stream = drift_stream("sea", n=50, drift_at=10**9, seed=7)
    (promotion,) = [
        p for i, (x, y) in enumerate(stream) if (p := trainer.learn(x, y, source="s", position=i))
    ]
    artifacts.down = True
    run(box.promote(promotion))
    run(box.notify(notice(1), version=1))
    assert box.waiting == 2 and box.waiting_models() == {"sea"} and not broker.records()
    artifacts.down = False
    assert run(box.flush())
    assert [r.kind for r in broker.records()] == [RecordKind.INITIAL, RecordKind.DRIFT]


def test_a_crash_at_any_event_publishes_every_notice_exactly_once(monkeypatch) -> None:
    monkeypatch.setattr(test_ledger, "SPEC", DRIFTING)
    events = sea_events(3000)
    baseline_broker = fakes()[1]
    baseline = Worker(fakes()[0], baseline_broker, fakes()[2])
    run(baseline.feed(events))
    expected = [_comparable(r) for r in baseline_broker.records()]
    assert {RecordKind.DRIFT, RecordKind.ACTION} <= {r["kind"] for r in expected}

    checkpoints, broker, artifacts = fakes()
    # Right after the first drift's records, and while the refit it cut is pending (lag 40).
    drift_at = next(r["lineage"]["event"] for r in expected if r["kind"] == RecordKind.DRIFT)
    for crash_after in (drift_at, drift_at + 1, drift_at + 30, 3000):
        worker = Worker(checkpoints, broker, artifacts, checkpoint_every=25)
        resume = checkpoints.cursor.get((test_ledger.LABELED.topic, 0), -1) + 1
        run(worker.feed([Event(e.message) for e in events[: max(crash_after, resume)]]))
    assert [_comparable(r) for r in broker.records()] == expected


def _comparable(record) -> dict:
    """A record without what differs between two runs (times, signatures over them)."""
    fields = dataclasses.asdict(record)
    for varying in ("created_at", "signature", "libraries"):
        fields.pop(varying)
    return fields


class CountingExecutor(ThreadPoolExecutor):
    """A thread pool that counts what it was given."""

    submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_the_refit_pool_hands_in_each_fit_once_and_installs_what_inline_fits_would() -> None:
    spec = ModelSpec.from_dict("sea", DRIFTING)
    stream = list(drift_stream("sea", n=1000, drift_at=500, seed=3))
    inline, pooled = ModelTrainer(spec), ModelTrainer(spec)
    for position, (x, y) in enumerate(stream):
        inline.learn(x, y, source="s", position=position)

    async def feed(pool: RefitPool) -> None:
        for position, (x, y) in enumerate(stream):
            await pool.ready(pooled)
            pooled.learn(x, y, source="s", position=position)
            pool.submit(pooled)

    with CountingExecutor(max_workers=1) as executor:
        run(feed(RefitPool(executor)))
    window = pooled.candidate("win")
    assert executor.submitted == window.n_refits == 3
    assert pooled.snapshot() == inline.snapshot()
