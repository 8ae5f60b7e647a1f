"""Delayed outcomes (``produce --outcomes``): the heap's schedule under an injected clock, and the
command line's flags."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import pytest

import streams.cli.main as cli
from streams.contract import InvalidEvent, Outcome
from streams.sdk.outcomes import (
    OutcomeOrder,
    OutcomeScheduler,
    OutcomeTiming,
    OutcomeTimingError,
    parse_delay,
)


class FakeTime:
    """A clock that only moves when slept on; the wall clock runs 1e9 s ahead of it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1e9 + self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now += seconds


class Sent:
    """Everything a scheduler sent, in order: ("event" | "outcome", event_id, time sent)."""

    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.log: list[tuple[str, str, float]] = []
        self.outcomes: list[Outcome] = []

    def event(self, event: Mapping[str, Any]) -> None:
        self.log.append(("event", event["event_id"], self.time.now))

    def outcome(self, outcome: Outcome) -> None:
        self.log.append(("outcome", outcome.event_id, self.time.now))
        self.outcomes.append(outcome)


def events(count: int) -> list[dict[str, Any]]:
    return [
        {"event_id": f"e-{n}", "model": "sea", "ts": 1.0, "features": {"x": n}, "label": n % 2 == 0}
        for n in range(count)
    ]


def scheduler(timing: OutcomeTiming) -> tuple[OutcomeScheduler, Sent, FakeTime]:
    time = FakeTime()
    sent = Sent(time)
    schedule = OutcomeScheduler(
        timing,
        send_event=sent.event,
        send_outcome=sent.outcome,
        clock=time.clock,
        wall=time.wall,
        sleep=time.sleep,
    )
    return schedule, sent, time


def test_each_outcome_follows_its_event_after_its_drawn_delay():
    schedule, sent, time = scheduler(OutcomeTiming(delay=(1.0, 30.0), seed=3))
    for event in events(200):
        schedule.submit(event)
        schedule.sleep(0.1)  # 10 events/s
    schedule.drain()

    assert schedule.pending == 0
    sent_at = {(kind, event_id): at for kind, event_id, at in sent.log}
    delays = [sent_at["outcome", f"e-{n}"] - sent_at["event", f"e-{n}"] for n in range(200)]
    # Sent as soon as due: sleep() wakes at each due time, never later.
    assert all(1.0 <= delay <= 30.0 for delay in delays)
    assert min(delays) < 3 and max(delays) > 27, "drawn across the whole range"
    assert [o.label for o in sorted(sent.outcomes, key=lambda o: int(o.event_id[2:]))] == [
        n % 2 == 0 for n in range(200)
    ]
    # The outcome is stamped when it is sent.
    assert all(o.ts == 1e9 + sent_at["outcome", o.event_id] for o in sent.outcomes)
    # The command ends with the last due outcome, not later.
    assert time.now == max(at for _, _, at in sent.log)
    assert (schedule.counts.events, schedule.counts.outcomes) == (200, 200)


def test_the_heap_holds_only_what_is_in_flight():
    schedule, sent, _ = scheduler(OutcomeTiming(delay=(2.0, 2.0)))
    in_flight = []
    for event in events(100):
        schedule.submit(event)
        in_flight.append(schedule.pending)
        schedule.sleep(0.5)
    # A 2 s delay at 2 events/s: four or five outcomes wait at any time, however long the stream.
    assert max(in_flight) <= 5
    schedule.drain()
    assert len(sent.outcomes) == 100


def test_outcomes_before_their_event_and_missing_ones_in_the_drawn_shares():
    timing = OutcomeTiming(delay=(1.0, 5.0), before=0.1, missing=0.01, seed=11)
    schedule, sent, _ = scheduler(timing)
    orders = [schedule.submit(event) for event in events(20_000)]
    schedule.drain()

    draw = timing.plan()
    assert orders == [draw()[0] for _ in range(20_000)], "the plan tells a test what was left out"
    before = [n for n, order in enumerate(orders) if order is OutcomeOrder.BEFORE]
    missing = {n for n, order in enumerate(orders) if order is OutcomeOrder.MISSING}
    assert 0.09 < len(before) / 20_000 < 0.11
    assert 0.005 < len(missing) / 20_000 < 0.015
    position = {(kind, event_id): index for index, (kind, event_id, _) in enumerate(sent.log)}
    assert all(position["outcome", f"e-{n}"] < position["event", f"e-{n}"] for n in before)
    assert {o.event_id for o in sent.outcomes} == {f"e-{n}" for n in range(20_000)} - {
        f"e-{n}" for n in missing
    }
    assert len(sent.outcomes) == len({o.event_id for o in sent.outcomes}), "none sent twice"
    assert sum(kind == "event" for kind, _, _ in sent.log) == 20_000, "every event is sent"
    assert schedule.counts.before == len(before) and schedule.counts.missing == len(missing)


def test_the_same_seed_gives_the_same_schedule():
    def run(seed: int) -> list[tuple[str, str, float]]:
        schedule, sent, _ = scheduler(OutcomeTiming(before=0.2, missing=0.1, seed=seed))
        for event in events(50):
            schedule.submit(event)
        schedule.drain()
        return sent.log

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_an_event_without_a_label_is_refused_before_anything_is_sent():
    schedule, sent, _ = scheduler(OutcomeTiming())
    unlabeled = {key: value for key, value in events(1)[0].items() if key != "label"}
    with pytest.raises(InvalidEvent, match="no 'label'"):
        schedule.submit(unlabeled)
    with pytest.raises(InvalidEvent, match="label"):
        schedule.submit({**events(1)[0], "label": [1]})
    assert sent.log == [] and schedule.pending == 0


@pytest.mark.parametrize(
    ("text", "bounds"), [("1-30", (1.0, 30.0)), ("0.5-2", (0.5, 2.0)), ("0", (0.0, 0.0))]
)
def test_delays_read_as_a_user_types_them(text, bounds):
    assert parse_delay(text) == bounds


@pytest.mark.parametrize("text", ["", "a-b", "30-1", "-1", "1-", "1-inf", "nan"])
def test_a_malformed_delay_is_refused(text):
    with pytest.raises(OutcomeTimingError):
        parse_delay(text)


@pytest.mark.parametrize(
    "shares", [{"before": -0.1}, {"missing": 1.5}, {"before": 0.6, "missing": 0.5}]
)
def test_shares_outside_zero_to_one_are_refused(shares):
    with pytest.raises(OutcomeTimingError):
        OutcomeTiming(**shares)


@pytest.fixture
def produced(monkeypatch: pytest.MonkeyPatch) -> list[argparse.Namespace]:
    """The arguments ``driftline produce`` would run with (nothing is sent)."""
    runs: list[argparse.Namespace] = []
    monkeypatch.setattr(cli, "_produce", lambda args: runs.append(args) or 0)
    return runs


def test_outcome_flags_reach_produce_as_a_timing(produced):
    argv = ["produce", "--synthetic", "sea", "--events", "10", "--seed", "7"]
    assert (
        cli.main([*argv, "--outcomes", "--outcome-delay", "2-4", "--outcomes-before", "0.1"]) == 0
    )
    assert produced[0].kind == "unlabeled"
    assert produced[0].outcome_timing == OutcomeTiming(delay=(2.0, 4.0), before=0.1, seed=7)
    assert cli.main([*argv, "--unlabeled", "--outcomes", "--outcomes-missing", "0.01"]) == 0
    assert produced[1].outcome_timing == OutcomeTiming(missing=0.01, seed=7)
    assert cli.main(argv) == 0
    assert (produced[2].kind, produced[2].outcomes) == ("labeled", False)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--outcome-delay", "1-2"], "--outcome-delay needs --outcomes"),
        (["--outcomes-missing", "0.1"], "--outcomes-missing needs --outcomes"),
        (["--outcomes", "--labeled"], "drop --labeled"),
        (["--outcomes", "--outcome-delay", "9-1"], "0 <= LOW <= HIGH"),
        (["--outcomes", "--outcomes-before", "2"], "[0, 1]"),
    ],
)
def test_outcome_flags_that_do_not_fit_are_refused(produced, capsys, flags, message):
    with pytest.raises(SystemExit) as exited:
        cli.main(["produce", "--synthetic", "sea", "--events", "10", *flags])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert produced == []
