"""Actions on drift: reset copies, refits, a shortened cooldown, the rate limit, the notices."""

from __future__ import annotations

import warnings

import pytest

from trainers.actions import DriftResponder
from trainers.drift import Detection, DriftSpec
from trainers.errors import ConfigError
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

LR = {"name": "lr", "river": "StandardScaler | LogisticRegression"}
WINDOW = {
    "name": "win",
    "sklearn_window": "LogisticRegression",
    "params": {"max_iter": 1000},
    "window_events": 500,
    "refit_every": 500,
    "refit_lag": 50,
}
ACTIONS = ["reset", "refit", "shorten_cooldown"]
# A concept switch at event 2000, after which "lr" recovers (ADWIN sees its loss fall at 3144),
HYPERPLANE = list(drift_stream("hyperplane", n=4000, drift_at=2000, seed=1))
# and here the labels flip at 3000: ADWIN watching "lr" fires at events 2088 and 3048, both up.
STREAM = HYPERPLANE[:3000] + [(x, 1 - y) for x, y in HYPERPLANE[3000:]]


def spec(candidates=(LR, WINDOW), **drift):
    settings = {"actions": ACTIONS, "min_events_between_actions": 300, **drift}
    return ModelSpec.from_dict(
        "plane",
        {
            "task": "classification",
            "champion": "lr",
            "candidates": list(candidates),
            "policy": {"warmup": 200, "every": 200, "min_samples": 200, "cooldown": 1000},
            "drift": settings,
        },
    )


def feed(trainer, stream=STREAM, start=0):
    """Learn `stream` from `start`; the notices taken along the way."""
    notices = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence on unscaled windows
        for position, (x, y) in enumerate(stream[start:], start):
            trainer.learn(x, y, source="s", position=position)
            notices.extend(trainer.take_notices())
    return notices


def summary(notices):
    return [
        (n.sequence, n.kind, n.candidate, n.lineage["event"], n.evidence.get("suppressed"))
        for n in notices
    ]


def test_each_detection_is_noticed_with_its_actions_and_their_cause():
    trainer = ModelTrainer(spec())
    notices = feed(trainer)
    assert summary(notices) == [
        (1, "drift", "lr", 2088, None),
        (2, "action", "lr@reset1", 2088, False),
        (3, "action", "lr", 2088, False),
        (4, "action", "lr", 2088, False),
        (5, "drift", "lr", 3048, None),
        (6, "action", "lr@reset2", 3048, False),
        (7, "action", "lr", 3048, False),
        (8, "action", "lr", 3048, False),
    ]
    drift, reset, refit, cooldown = notices[:4]
    assert drift.evidence["direction"] == "up"
    assert drift.evidence["detector"] == "ADWIN" and drift.lineage["position"] == 2087
    assert {n.evidence["cause"] for n in (reset, refit, cooldown)} == {1}
    assert [n.evidence["action"] for n in (reset, refit, cooldown)] == ACTIONS
    assert refit.evidence["jobs"] == [{"candidate": "win", "cut": 2088, "due": 2138}]
    assert reset.evidence["copy_of"] == "lr"


def test_a_reset_copy_learns_from_the_drift_on_and_replaces_the_oldest_copy():
    trainer = ModelTrainer(spec())
    feed(trainer)
    # max_reset_copies = 1: the second copy replaced the first.
    assert trainer.learned == {"lr": 4000, "win": 4000, "lr@reset2": 4000 - 3048}
    assert trainer.candidate("lr@reset2").params == {**LR, "name": "lr@reset2"}
    assert "lr@reset2" in trainer.report()["candidates"]

    two = ModelTrainer(spec(max_reset_copies=2))
    notices = feed(two)
    assert two.learned == {"lr": 4000, "win": 4000, "lr@reset1": 1912, "lr@reset2": 952}
    assert all("replaces" not in n.evidence for n in notices)


def test_actions_within_the_rate_limit_are_suppressed_and_noticed():
    trainer = ModelTrainer(spec(min_events_between_actions=2000))
    notices = feed(trainer)
    assert summary(notices)[4:] == [
        (5, "drift", "lr", 3048, None),
        (6, "action", "lr", 3048, True),
        (7, "action", "lr", 3048, True),
        (8, "action", "lr", 3048, True),
    ]
    assert notices[5].reason == (
        "reset suppressed: 960 events since the last action (event 2088), fewer than 2000"
    )
    assert trainer.learned == {"lr": 4000, "win": 4000, "lr@reset1": 1912}


def test_a_detection_of_a_falling_loss_is_noticed_and_acted_on_never():
    trainer = ModelTrainer(spec())
    notices = feed(trainer, HYPERPLANE)
    assert summary(notices)[4:] == [(5, "drift", "lr", 3144, None)]
    fall = notices[4]
    assert fall.evidence["direction"] == "down"
    assert fall.evidence["mean_loss_recent"] < fall.evidence["mean_loss_before"]
    assert fall.reason.endswith("at event 3144: the loss fell, no action taken")
    assert trainer.learned == {"lr": 4000, "win": 4000, "lr@reset1": 4000 - 2088}


def test_shorten_cooldown_leaves_at_most_cooldown_after_drift():
    trainer = ModelTrainer(spec(actions=["shorten_cooldown"], cooldown_after_drift=100))
    notices = feed(trainer, STREAM[:2100])
    (cooldown,) = [n for n in notices if n.kind == "action"]
    remaining = cooldown.evidence["cooldown_remaining"]
    assert remaining["after"] == min(remaining["before"], 100)


def test_a_restored_trainer_keeps_its_copies_and_numbers_notices_alike():
    uninterrupted = ModelTrainer(spec())
    expected = feed(uninterrupted)
    interrupted = ModelTrainer(spec())
    first = feed(interrupted, STREAM[:2500])
    restored, changes = ModelTrainer.restore(interrupted.snapshot(), spec())
    assert not changes and "lr@reset1" in restored.learned
    rest = feed(restored, STREAM, 2500)
    assert [*first, *rest] == expected
    assert restored.learned == uninterrupted.learned


def test_a_copy_of_a_candidate_reset_by_the_operator_is_dropped_on_restore():
    trainer = ModelTrainer(spec())
    feed(trainer, STREAM[:2500])
    edited = {**LR, "params": {"LogisticRegression": {"l2": 0.01}}}
    restored, changes = ModelTrainer.restore(
        trainer.snapshot(), spec((edited, WINDOW)), reset={"lr"}
    )
    assert changes.reset == ("lr",) and changes.dropped == ("lr@reset1",)
    assert set(restored.learned) == {"lr", "win"}


def test_the_responder_copies_the_configured_reset_candidate_under_a_new_number():
    drift = DriftSpec.from_dict(
        {"actions": ["reset"], "reset": "win", "min_events_between_actions": 0},
        ["lr", "win"],
        task="classification",
        metric="accuracy",
    )
    responder = DriftResponder("plane")
    tables = {"lr": LR, "win": WINDOW}
    names = [
        responder.respond(
            Detection("lr", "ADWIN", event=event, source="s", position=event),
            drift,
            champion="lr",
            tables=tables,
        ).actions[0]
        for event in (100, 200)
    ]
    assert [(a.candidate, a.replaces) for a in names] == [
        ("win@reset1", None),
        ("win@reset2", "win@reset1"),
    ]
    assert names[1].table == {**WINDOW, "name": "win@reset2"}
    assert responder.copies == ["win@reset2"]


def test_a_copy_that_became_champion_is_not_replaced():
    drift = DriftSpec.from_dict(
        {"actions": ["reset"], "min_events_between_actions": 0},
        ["lr"],
        task="classification",
        metric="accuracy",
    )
    responder = DriftResponder("plane", copies_made=1, copies=["lr@reset1"])
    plan = responder.respond(
        Detection("lr@reset1", "ADWIN", event=10, source="s", position=10),
        drift,
        champion="lr@reset1",
        tables={"lr": LR, "lr@reset1": {**LR, "name": "lr@reset1"}},
    )
    assert [(a.candidate, a.replaces) for a in plan.actions] == [("lr@reset2", None)]
    assert responder.copies == ["lr@reset1", "lr@reset2"]


def test_a_configured_candidate_may_not_take_a_reset_copy_name():
    with pytest.raises(ConfigError, match="names with '@reset' are those of drift reset copies"):
        spec(({**LR, "name": "lr@reset1"}, WINDOW))
