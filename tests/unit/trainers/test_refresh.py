"""Fresh champions: the served copy is tested beside the candidates, and refreshed when stale."""

from __future__ import annotations

import copy
import pickle

from trainers.sequential import METHOD
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

DRIFT_AT = 3000
EVENTS = list(drift_stream("sea", n=8000, drift_at=DRIFT_AT, seed=3))
POLICY = {
    "warmup": 1000,
    "every": 500,
    "min_samples": 500,
    "cooldown": 1000,
    "margin": 0.01,
    "alpha": 0.01,
}


def spec(refresh_every=500, strategy="direct"):
    return ModelSpec.from_dict(
        "sea",
        {
            "task": "classification",
            "window": 500,
            "candidates": [
                {
                    "name": "agile",
                    "river": "StandardScaler | LogisticRegression",
                    "params": {"LogisticRegression": {"optimizer": {"SGD": 0.1}}},
                },
            ],
            "policy": POLICY,
            "refresh_every": refresh_every,
            "rollout": {"strategy": strategy},
        },
    )


def run(trainer, start=0, stop=None):
    promotions = []
    for position in range(start, len(EVENTS) if stop is None else stop):
        x, y = EVENTS[position]
        if (promotion := trainer.learn(x, y, source="sea", position=position)) is not None:
            promotions.append(promotion)
    return promotions


def test_no_refresh_when_refresh_every_is_zero_and_the_staleness_shows():
    trainer = ModelTrainer(spec(refresh_every=0))
    promotions = run(trainer)
    assert [(p.version, p.kind) for p in promotions] == [(1, "initial")]
    served = trainer.report()["served"]
    assert (served["version"], served["candidate"], served["failed"]) == (1, "agile", None)
    assert served["n"] == len(EVENTS) - 1000  # tested on every event since v1 began to serve
    staleness = served["staleness"]
    assert staleness["metric"] == "accuracy" and staleness["events"] == 500
    # The frozen v1 still knows the old concept only; the live champion has followed the drift.
    assert staleness["champion"] > staleness["served"] + 0.03
    assert (
        served["cumulative"]["accuracy"]
        < trainer.report()["candidates"]["agile"]["cumulative"]["accuracy"]
    )


def test_a_refresh_is_issued_once_the_live_champion_beats_its_served_copy_after_a_drift():
    trainer = ModelTrainer(spec())
    promotions = run(trainer)
    refreshes = [p for p in promotions if p.kind == "refresh"]
    # The served copy and the live champion agree until the drift: only after it can one win.
    after_drift = [p for p in refreshes if p.evidence["window"][1] > DRIFT_AT]
    assert after_drift, [(p.version, p.kind, p.evidence["window"]) for p in promotions]
    refresh = after_drift[0]
    assert refresh.candidate == "agile" and refresh.previous_version == refresh.version - 1
    assert refresh.evidence["served_version"] == refresh.previous_version
    assert refresh.evidence["decision"] == "refresh" and refresh.evidence["test"] == METHOD
    assert refresh.evidence["lower"] > refresh.evidence["threshold"] == POLICY["margin"]
    assert refresh.evidence["alpha_spent"] < POLICY["alpha"]
    assert refresh.reason.startswith("refresh of champion 'agile': ")
    # Versions count on; the served copy is now the refreshed one.
    assert [p.version for p in promotions] == list(range(1, len(promotions) + 1))
    assert trainer.champion_version == promotions[-1].version
    # Refreshing kept the served copy close to the live champion.
    staleness = trainer.report()["served"]["staleness"]
    assert staleness["champion"] - staleness["served"] < 0.03


def test_the_served_copy_predicts_and_never_learns():
    trainer = ModelTrainer(spec(refresh_every=0))
    [initial] = run(trainer, 0, 1000)
    served = trainer.served_copy
    assert served is not None and served is not initial.estimator
    before = served.n_learned
    run(trainer, 1000, 2000)
    assert trainer.served_copy is served and served.n_learned == before
    assert all(served.predict_one(x) == initial.estimator.predict_one(x) for x, _ in EVENTS[:200])
    assert trainer.report()["served"]["n"] == 1000


def test_under_a_canary_strategy_a_refresh_goes_on_trial():
    trainer = ModelTrainer(spec(strategy="canary"))
    promotions = run(trainer)
    assert [(p.version, p.kind) for p in promotions] == [(1, "initial"), (2, "canary")]
    trial = promotions[1]
    assert trial.evidence["decision"] == "refresh" and trial.rollout == {"fraction": 0.1}
    assert trainer.champion_version == 1 and trainer.trial is trial


def test_snapshots_keep_the_served_copy_and_continue_identically():
    whole = ModelTrainer(spec())
    expected = run(whole)
    head = ModelTrainer(spec())
    first = run(head, 0, 4200)
    restored, _ = ModelTrainer.restore(head.snapshot(), spec())
    rest = run(restored, 4200)
    summary = [(p.version, p.kind, p.evidence["window"]) for p in expected]
    assert [(p.version, p.kind, p.evidence["window"]) for p in first + rest] == summary
    assert restored.report() == whole.report()


def test_a_format_2_snapshot_is_upgraded_without_a_served_copy():
    trainer = ModelTrainer(spec())
    run(trainer, 0, 1500)
    old = copy.copy(trainer)
    old.__dict__ = dict(trainer.__dict__)
    format_2_lacks = ("_served_copy", "_served_score", "_served_failure", "_trial", "_learned")
    for name in (*format_2_lacks, "_drift", "_detections", "_tests"):
        del old.__dict__[name]
    # Before complete lineage, the first and last position of each source.
    old.__dict__["_positions"] = old.__dict__.pop("_lineage").spans
    old._format = 2
    restored, _ = ModelTrainer.restore(pickle.dumps(old), spec())
    assert restored.served_copy is None and restored.trial is None
    assert restored.learned == {"agile": 1500} and restored.report()["served"] is None
    # Nothing to refresh against, so nothing is refreshed, until a version serves with its copy.
    assert run(restored, 1500, 3000) == []
    restored.adopt(1, "agile", "rollout", estimator=copy.deepcopy(restored.candidate("agile")))
    run(restored, 3000, 3100)
    assert restored.report()["served"]["n"] == 100
