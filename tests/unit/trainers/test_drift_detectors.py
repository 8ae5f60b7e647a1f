"""Drift detectors: each one's wiring, the trainer's feeding, snapshots, and the config errors."""

from __future__ import annotations

import pickle
import random

import pytest

from trainers.drift import BINARY_DETECTORS, DETECTORS, DriftMonitor, DriftSpec
from trainers.errors import ConfigError
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

CHANGE, EVENTS = 2000, 4000
# DDM and EDDM fire on a stationary 10% error rate with river's defaults (a short warm start,
# EDDM's loose thresholds); these settle them, as a configuration would.
PARAMS = {"DDM": {"warm_start": 300}, "EDDM": {"warm_start": 300, "alpha": 0.9, "beta": 0.8}}


def error_bits(seed, change=None):
    """EVENTS error bits at a 10% rate, jumping to 80% from event `change` on."""
    rng = random.Random(seed)
    return [
        float(rng.random() < (0.1 if change is None or i < change else 0.8)) for i in range(EVENTS)
    ]


def detections(monitor, losses, candidate="c"):
    return [
        detection
        for event, loss in enumerate(losses, start=1)
        if (detection := monitor.update(candidate, loss, event=event, source="s", position=event))
    ]


@pytest.mark.parametrize("detector", list(DETECTORS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_detector_fires_soon_after_an_abrupt_change_and_not_on_a_stationary_stream(
    detector, seed
):
    spec = DriftSpec(detector=detector, params=PARAMS.get(detector, {}))
    assert detections(DriftMonitor(spec), error_bits(seed)) == []
    first, *_ = detections(DriftMonitor(spec), error_bits(seed, CHANGE))
    assert CHANGE < first.event <= CHANGE + 300
    assert (first.candidate, first.detector, first.source, first.position) == (
        "c",
        detector,
        "s",
        first.event,
    )
    evidence = first.evidence
    assert evidence["params"] == PARAMS.get(detector, {})
    # The mean since the detector started is mostly the 10% before the change.
    assert 0.05 < evidence["mean_loss_before"] < 0.3 and evidence["events"] == first.event


def test_adwin_evidence_holds_its_window_after_the_cut():
    [first, *_] = detections(DriftMonitor(DriftSpec()), error_bits(0, CHANGE))
    assert first.evidence["window_width"] < first.event
    assert first.evidence["window_mean"] > first.evidence["mean_loss_before"]


def test_a_detector_that_samples_gets_a_fixed_seed_and_detects_the_same_way_twice():
    losses = error_bits(3, CHANGE)
    runs = [detections(DriftMonitor(DriftSpec(detector="KSWIN")), losses) for _ in range(2)]
    assert runs[0] == runs[1] != []


def test_a_pickled_monitor_detects_exactly_where_the_original_does():
    losses = error_bits(1, CHANGE)
    whole = detections(DriftMonitor(DriftSpec()), losses)
    head = DriftMonitor(DriftSpec())
    assert detections(head, losses[:1500]) == []
    restored = pickle.loads(pickle.dumps(head))
    tail = [
        detection
        for event, loss in enumerate(losses[1500:], start=1501)
        if (detection := restored.update("c", loss, event=event, source="s", position=event))
    ]
    assert tail == whole


def test_forget_starts_a_fresh_detector():
    monitor = DriftMonitor(DriftSpec())
    detections(monitor, error_bits(0)[:1000])
    assert monitor.watched == ("c",)
    monitor.forget("c")
    assert monitor.watched == ()
    # A fresh detector on the new level alone: nothing to detect.
    assert detections(monitor, [1.0, 0.0, 1.0, 1.0] * 250) == []


def sea_trainer(watch="champion", **drift):
    spec = ModelSpec.from_dict(
        "sea",
        {
            "task": "classification",
            "champion": "steady",
            "candidates": [
                {
                    "name": "steady",
                    "river": "StandardScaler | LogisticRegression",
                    "params": {"LogisticRegression": {"optimizer": {"SGD": 0.01}}},
                },
                {"name": "nb", "river": "naive_bayes.GaussianNB"},
            ],
            "policy": {"warmup": 200, "every": 200, "min_samples": 200},
            "drift": {"watch": watch, **drift},
        },
    )
    return ModelTrainer(spec)


def learn(trainer, events, start=0):
    for position, (x, y) in enumerate(events, start=start):
        trainer.learn(x, y, source="sea", position=position)


def test_the_trainer_feeds_the_champion_s_errors_and_queues_its_detections():
    trainer = sea_trainer()
    learn(trainer, drift_stream("sea", n=6000, drift_at=3000, seed=5))
    found = trainer.take_detections()
    assert found and {d.candidate for d in found} == {"steady"}
    assert 3000 < found[0].event <= 3300 and found[0].position == found[0].event - 1
    assert trainer.take_detections() == []  # drained


def test_watching_all_feeds_every_candidate():
    trainer = sea_trainer(watch="all")
    learn(trainer, drift_stream("sea", n=6000, drift_at=3000, seed=5))
    assert {d.candidate for d in trainer.take_detections()} == {"steady", "nb"}


def test_a_restored_trainer_detects_the_same_drifts_at_the_same_events():
    events = list(drift_stream("sea", n=6000, drift_at=3000, seed=5))
    whole = sea_trainer()
    learn(whole, events)
    head = sea_trainer()
    learn(head, events[:2900])
    assert head.take_detections() == []
    restored, changes = ModelTrainer.restore(head.snapshot(), head.spec)
    assert not changes
    learn(restored, events[2900:], start=2900)
    assert restored.take_detections() == whole.take_detections() != []


def test_a_changed_drift_table_starts_a_new_monitor_on_restore():
    trainer = sea_trainer()
    learn(trainer, drift_stream("sea", n=500, drift_at=500, seed=5))
    spec = sea_trainer(detector="PageHinkley").spec
    restored, changes = ModelTrainer.restore(trainer.snapshot(), spec)
    assert restored._drift.spec.detector == "PageHinkley" and restored._drift.watched == ()
    assert [line.split(":")[0] for line in changes.settings] == ["drift"]


def test_a_format_4_snapshot_is_upgraded_with_no_paired_tests():
    trainer = sea_trainer()
    learn(trainer, drift_stream("sea", n=500, drift_at=500, seed=5))
    del trainer.__dict__["_tests"]
    trainer.__dict__["_positions"] = {"sea": [0, 499]}
    del trainer.__dict__["_lineage"]
    trainer._format = 4
    restored, _ = ModelTrainer.restore(pickle.dumps(trainer), trainer.spec)
    assert restored._tests.rounds == 0 and restored._drift is not None
    learn(restored, drift_stream("sea", n=10, drift_at=10, seed=6), start=500)
    assert restored._tests.rounds == 1


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ([], "drift: must be a table"),
        ({"detektor": "ADWIN"}, r"drift: unknown settings \['detektor'\]"),
        ({"detector": "CUSUM"}, "drift.detector must be one of"),
        ({"params": 3}, "drift.params must be a table"),
        ({"params": {"delta": 0.1, "wrong": 1}}, "drift.params do not fit ADWIN"),
        ({"watch": "everyone"}, "drift.watch must be one of"),
        ({"actions": "reset"}, "drift.actions must be a list"),
        ({"actions": ["reset", "reset"]}, "drift.actions must be a list of distinct"),
        ({"actions": ["retrain"]}, "drift.actions must be a list"),
        ({"actions": ["reset"], "reset": "ghost"}, "drift.reset: 'ghost' is not a candidate"),
        ({"reset": "nb"}, r"drift.reset names the candidate a reset copies: add 'reset'"),
        ({"max_reset_copies": 0}, "drift.max_reset_copies must be an integer >= 1"),
        ({"min_events_between_actions": True}, "drift.min_events_between_actions must be"),
        ({"cooldown_after_drift": -1}, "drift.cooldown_after_drift must be an integer >= 0"),
    ],
)
def test_bad_drift_tables_are_refused_by_key(table, message):
    with pytest.raises(ConfigError, match=message):
        DriftSpec.from_dict(table, ["nb"], task="classification", metric="accuracy")


@pytest.mark.parametrize("detector", sorted(BINARY_DETECTORS))
@pytest.mark.parametrize(
    ("task", "metric"), [("classification", "log_loss"), ("regression", "mae")]
)
def test_binary_detectors_need_error_bits(detector, task, metric):
    with pytest.raises(ConfigError, match=f"drift.detector '{detector}' reads error bits"):
        DriftSpec.from_dict({"detector": detector}, ["m"], task=task, metric=metric)


def test_the_model_spec_parses_the_drift_table_and_names_the_model_in_errors():
    spec = sea_trainer(actions=["reset", "shorten_cooldown"], reset="nb").spec
    assert spec.drift == DriftSpec(actions=("reset", "shorten_cooldown"), reset="nb")
    with pytest.raises(ConfigError, match=r"model 'sea': drift\.watch must be"):
        sea_trainer(watch="nobody")


def test_a_regression_model_that_can_be_challenged_needs_a_loss_scale():
    table = {
        "task": "regression",
        "candidates": [{"name": "lin", "river": "LinearRegression"}],
    }
    assert ModelSpec.from_dict("r", table).policy.loss_scale is None  # nothing to compare
    for challenged in (
        {"refresh_every": 100},
        {"drift": {"actions": ["reset"]}},
        {"candidates": [*table["candidates"], {"name": "pa", "river": "linear_model.PARegressor"}]},
    ):
        with pytest.raises(ConfigError, match=r"policy\.loss_scale is required"):
            ModelSpec.from_dict("r", {**table, **challenged})
    rollout = {"strategy": "canary", "loss_scale": 5.0}
    spec = ModelSpec.from_dict("r", {**table, "refresh_every": 100, "rollout": rollout})
    assert spec.policy.loss_scale == 5.0  # the guardrail's scale is taken
