"""Rollout strategies on the trainer's side: trials, rollouts, rollbacks to a frozen artifact."""

from __future__ import annotations

import copy
import pickle

import pytest

from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

POLICY = {
    "warmup": 300,
    "every": 300,
    "min_samples": 300,
    "cooldown": 600,
    "alpha": 0.05,
    "margin": 0,
}
EVENTS = list(drift_stream("sea", n=6000, drift_at=1500, seed=4))


def sea_spec(strategy="direct", **rollout):
    return ModelSpec.from_dict(
        "sea",
        {
            "task": "classification",
            "window": 300,
            "champion": "steady",
            "candidates": [
                {
                    "name": "steady",
                    "river": "StandardScaler | LogisticRegression",
                    "params": {"LogisticRegression": {"optimizer": {"SGD": 0.01}}},
                },
                {"name": "agile", "river": "StandardScaler | linear_model.PAClassifier"},
            ],
            "policy": POLICY,
            # The detection restarts the paired tests: "agile" wins on evidence after the drift.
            "drift": {"detector": "ADWIN"},
            "rollout": {"strategy": strategy, **rollout},
        },
    )


def feed(trainer, start, stop):
    """Learn EVENTS[start:stop]; return the (position, promotion) pairs."""
    promotions = []
    for position in range(start, stop):
        x, y = EVENTS[position]
        promotion = trainer.learn(x, y, source="sea", position=position)
        if promotion is not None:
            promotions.append((position, promotion))
    return promotions


def first_trial(strategy="canary", **rollout):
    trainer = ModelTrainer(sea_spec(strategy, **rollout))
    promotions = feed(trainer, 0, len(EVENTS))
    # Only the first promotion and the first trial: nothing else while the trial is pending.
    assert len(promotions) == 2, [(p.version, p.kind) for _, p in promotions]
    return trainer, promotions


def same_predictions(a, b):
    return all(a.predict_one(x) == b.predict_one(x) for x, _ in EVENTS[-200:])


def test_direct_strategy_serves_every_promotion_at_once():
    trainer = ModelTrainer(sea_spec())
    promotions = feed(trainer, 0, len(EVENTS))
    assert [p.kind for _, p in promotions][:2] == ["initial", "challenger"]
    assert all(p.rollout is None and not p.is_trial for _, p in promotions)
    assert trainer.trial is None
    assert trainer.champion_version == promotions[-1][1].version


def test_a_canary_is_a_new_version_on_trial_and_the_champion_stays():
    trainer, [(_, initial), (position, trial)] = first_trial("canary", fraction=0.2)
    assert (initial.version, initial.kind, initial.rollout) == (1, "initial", None)
    assert (trial.version, trial.previous_version, trial.kind) == (2, 1, "canary")
    assert trial.candidate == "agile" and trial.rollout == {"fraction": 0.2} and trial.is_trial
    assert trial.evidence["decision"] == "challenger"
    # Nothing changed for the champion: v1 of "steady" serves until the trial is rolled out.
    assert (trainer.champion, trainer.champion_version, trainer.latest_version) == ("steady", 1, 2)
    assert trainer.trial is trial
    report = trainer.report()
    assert (report["version"], report["champion"]) == (1, "steady")
    assert report["trial"] == {
        "version": 2,
        "candidate": "agile",
        "kind": "canary",
        "rollout": {"fraction": 0.2},
    }
    assert report["served"]["version"] == 1
    assert position < len(EVENTS) - 2000  # the trial waited a long time with no other promotion


def test_a_shadow_trial_scores_every_event():
    _, [_, (_, trial)] = first_trial("shadow")
    assert (trial.kind, trial.rollout) == ("shadow", {"fraction": 1.0})


def test_a_rollout_makes_the_trial_champion_with_its_frozen_copy_serving():
    trainer = ModelTrainer(sea_spec("canary"))
    [_, (position, trial)] = feed(trainer, 0, len(EVENTS))[:2]
    trainer = ModelTrainer(sea_spec("canary"))
    feed(trainer, 0, position + 1)
    assert trainer.trial is not None and trainer.trial.version == trial.version
    trial = trainer.trial
    feed(trainer, position + 1, position + 500)  # the canary runs; "agile" learns on
    trainer.adopt(trial.version, trial.candidate, "rollout: guardrail")
    assert (trainer.champion, trainer.champion_version, trainer.trial) == ("agile", 2, None)
    assert trainer.champion_reason == "rollout: guardrail"
    # What serves is the copy taken at the trial, not the live candidate that learned since...
    assert same_predictions(trainer.served_copy, trial.estimator)
    assert trainer.served_copy is not trial.estimator
    assert not same_predictions(trainer.served_copy, trainer.candidate("agile"))
    # ...and the live candidate, the trial's own lineage, is kept with its scores.
    assert trainer.report()["candidates"]["agile"]["n"] == position + 500
    assert trainer.report()["served"]["n"] == 0
    # The policy runs again after the cooldown, and the next trial gets the next number.
    later = feed(trainer, position + 500, len(EVENTS))
    assert all(p.version >= 3 for _, p in later)


def test_a_rollback_adopts_the_frozen_artifact_as_champion():
    trainer = ModelTrainer(sea_spec())
    promotions = feed(trainer, 0, 4000)
    [(_, v1), (_, v2)] = promotions[:2]
    assert (v1.candidate, v2.candidate) == ("steady", "agile")
    learned = trainer.learned
    artifact = pickle.loads(pickle.dumps(v2.estimator))  # as the worker loads it from Redis
    trainer.adopt(2, "agile", "rollback by alice: v3 misbehaves", estimator=artifact)
    assert (trainer.champion, trainer.champion_version) == ("agile", 2)
    live = trainer.candidate("agile")
    assert trainer.served_copy is artifact and live is not artifact
    # The champion is the version as served, not the live "agile" that kept learning since v2.
    assert same_predictions(live, v2.estimator)
    # Its scores restart with it, so they describe what serves; its learned count goes on.
    report = trainer.report()
    assert report["candidates"]["agile"]["n"] == 0
    assert report["candidates"]["steady"]["n"] == 4000
    assert trainer.learned == learned
    feed(trainer, 4000, 4100)
    report = trainer.report()
    assert report["candidates"]["agile"]["n"] == report["served"]["n"] == 100
    assert trainer.learned == {"steady": 4100, "agile": 4100}
    assert not same_predictions(trainer.candidate("agile"), v2.estimator)  # it learns on


def test_a_rolled_back_trial_ends_and_the_stable_artifact_becomes_champion():
    trainer, [(_, v1), _] = first_trial()
    trainer.adopt(1, "steady", "rollback: canary worse", estimator=copy.deepcopy(v1.estimator))
    assert trainer.trial is None
    assert (trainer.champion, trainer.champion_version, trainer.latest_version) == ("steady", 1, 2)
    assert same_predictions(trainer.candidate("steady"), v1.estimator)
    assert trainer.report()["trial"] is None


def test_adopting_without_an_artifact_keeps_the_live_candidate():
    trainer = ModelTrainer(sea_spec())
    feed(trainer, 0, 4000)
    assert trainer.champion_version != 1
    live = trainer.candidate("steady")
    trainer.adopt(1, "steady", "rollback by alice")
    assert (trainer.champion, trainer.champion_version) == ("steady", 1)
    assert trainer.candidate("steady") is live
    # The served copy is unknown (not tested) until another version serves.
    assert trainer.served_copy is None and trainer.report()["served"] is None


def test_an_artifact_of_other_parameters_serves_but_leaves_the_title_vacant():
    trainer = ModelTrainer(sea_spec())
    feed(trainer, 0, 400)
    artifact = copy.deepcopy(trainer.candidate("agile"))
    artifact.params = {**artifact.params, "params": {}}
    trainer.adopt(9, "agile", "manual by bob", estimator=artifact)
    assert (trainer.champion, trainer.champion_version) == (None, 9)
    assert "other parameters" in trainer.report()["champion_vacated"]
    assert trainer.candidate("agile") is not artifact


def test_a_pending_trial_survives_a_snapshot():
    trainer, [_, (_, trial)] = first_trial()
    restored, changes = ModelTrainer.restore(trainer.snapshot(), sea_spec("canary"))
    assert not changes
    assert restored.trial is not None and restored.trial.version == trial.version
    assert same_predictions(restored.trial.estimator, trial.estimator)
    restored.adopt(trial.version, trial.candidate, "rollout")
    assert restored.champion_version == 2


@pytest.mark.parametrize("strategy", ["canary", "shadow"])
def test_the_first_version_serves_directly_under_any_strategy(strategy):
    trainer = ModelTrainer(sea_spec(strategy))
    [(_, first)] = feed(trainer, 0, 400)
    assert (first.kind, first.rollout, trainer.champion_version) == ("initial", None, 1)
