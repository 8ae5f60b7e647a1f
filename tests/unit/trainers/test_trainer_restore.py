"""ModelTrainer.restore: the current configuration, not the checkpoint, owns the model."""

from __future__ import annotations

import pytest

from trainers.errors import CandidateChangedError, ConfigError
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer, RestoreChanges

POLICY = {"warmup": 300, "every": 300, "min_samples": 300, "cooldown": 600, "alpha": 0.05}
STEADY = {"name": "steady", "river": "StandardScaler | LogisticRegression"}
AGILE = {
    "name": "agile",
    "river": "StandardScaler | LogisticRegression",
    "params": {"LogisticRegression": {"optimizer": {"SGD": 0.1}}},
}
WEAK = {"name": "weak", "river": "LogisticRegression", "params": {"optimizer": {"SGD": 1e-5}}}
HAT = {"name": "hat", "river": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 50}}


def spec(*candidates, champion="steady", window=300, name="sea", **policy):
    return ModelSpec.from_dict(
        name,
        {
            "task": "classification",
            "window": window,
            "champion": champion,
            "candidates": list(candidates or (STEADY, AGILE)),
            "policy": {**POLICY, **policy},
        },
    )


def feed(trainer, n, start=0, seed=4):
    events = list(drift_stream("sea", n=start + n, drift_at=10**9, seed=seed))[start:]
    promotions = []
    for position, (x, y) in enumerate(events, start):
        if (promotion := trainer.learn(x, y, source="s", position=position)) is not None:
            promotions.append(promotion)
    return promotions


def trained(*candidates, n=600, **settings):
    trainer = ModelTrainer(spec(*candidates, **settings))
    feed(trainer, n)
    return trainer


def test_an_unchanged_configuration_changes_nothing():
    trainer = trained()
    restored, changes = ModelTrainer.restore(trainer.snapshot(), spec())
    assert changes == RestoreChanges() and not changes and str(changes) == "no changes"
    assert restored.report() == trainer.report()


def test_policy_and_window_come_from_the_current_configuration():
    trainer = trained(n=600)
    edited = spec(window=100, margin=0.05, cooldown=0)
    restored, changes = ModelTrainer.restore(trainer.snapshot(), edited)
    assert restored.spec.policy.margin == 0.05 and restored.spec.window == 100
    assert changes.settings == (
        "window: 300 -> 100",
        "policy.margin: 0.01 -> 0.05",
        "policy.cooldown: 600 -> 0",
    )
    assert bool(changes) and "settings window: 300 -> 100" in str(changes)
    report = restored.report()["candidates"]["steady"]
    assert report["rolling"]["n"] == 100  # the new window
    assert report["cumulative"] == trainer.report()["candidates"]["steady"]["cumulative"]


def test_a_grown_history_pairs_only_the_events_kept():
    # Kept: 300 events per candidate at the snapshot, 600 learned; the new history is 900.
    trainer = trained(WEAK, STEADY, champion="weak", n=600)
    assert trainer.champion == "weak"
    restored, _ = ModelTrainer.restore(
        trainer.snapshot(), spec(WEAK, STEADY, champion="weak", window=900, cooldown=0)
    )
    [promotion] = feed(restored, 300, start=600)
    # At event 900 each candidate keeps events 301-900, not the 900 its history could hold.
    assert (promotion.kind, promotion.candidate) == ("challenger", "steady")
    assert promotion.evidence["window"] == [301, 900]
    assert promotion.evidence["n"] == 600


def test_a_new_candidate_starts_fresh_and_competes_once_it_has_min_samples():
    trainer = trained(WEAK, champion="weak", n=600)
    restored, changes = ModelTrainer.restore(
        trainer.snapshot(), spec(WEAK, STEADY, champion="weak", cooldown=0)
    )
    assert changes.started == ("steady",) and changes.dropped == ()
    assert restored.learned == {"weak": 600, "steady": 0}
    promotions = feed(restored, 900, start=600)
    assert restored.learned == {"weak": 1500, "steady": 900}
    # At event 900 it has scored min_samples events: it is compared on exactly those.
    first = promotions[0]
    assert (first.kind, first.candidate, first.previous_version) == ("challenger", "steady", 1)
    assert first.evidence["window"] == [601, 900]


def test_a_fresh_candidate_does_not_hold_back_the_others():
    trainer = trained(WEAK, STEADY, champion="weak", n=750, cooldown=10**6)
    assert trainer.champion == "weak"
    restored, changes = ModelTrainer.restore(
        trainer.snapshot(), spec(WEAK, STEADY, HAT, champion="weak", cooldown=0)
    )
    assert changes.started == ("hat",)
    [promotion, *_] = feed(restored, 150, start=750)
    # At event 900 "hat" has scored 150 events: its paired test has just begun (it learns, and
    # competes later), while the test of "steady" has gone on since the first champion, across
    # the restore.
    assert (promotion.candidate, promotion.evidence["window"]) == ("steady", [301, 900])
    assert restored.learned == {"weak": 900, "steady": 900, "hat": 150}


def test_a_removed_candidate_is_dropped_and_a_removed_champion_leaves_the_title_vacant():
    trainer = trained(STEADY, AGILE, HAT, n=600)
    assert (trainer.champion, trainer.champion_version) == ("steady", 1)
    restored, changes = ModelTrainer.restore(trainer.snapshot(), spec(AGILE, HAT, champion="agile"))
    assert changes.dropped == ("steady",) and changes.vacated == "steady"
    assert changes.settings == ("champion: 'steady' -> 'agile'",)
    assert restored.learned == {"agile": 600, "hat": 600}
    assert restored.champion is None
    report = restored.report()
    assert (report["version"], report["champion"]) == (1, "steady")  # still what serves
    assert report["champion_vacated"] == "champion 'steady' was dropped from the configuration"
    # The cooldown from the promotion at event 300 has passed: the next evaluation picks the
    # best of the others on the recent window (not the configured champion: a cold-start pick).
    [replacement] = feed(restored, 300, start=600)
    assert (replacement.version, replacement.previous_version, replacement.kind) == (
        2,
        1,
        "initial",
    )
    candidates = replacement.evidence["candidates"]
    assert replacement.candidate == max(candidates, key=candidates.get)
    assert replacement.reason.startswith("champion 'steady' was dropped from the configuration; ")
    assert restored.report()["champion"] == replacement.candidate


def test_a_changed_candidate_is_refused_unless_reset():
    trainer = trained(STEADY, AGILE, HAT)
    changed_agile = {**AGILE, "params": {"LogisticRegression": {"optimizer": {"SGD": 0.2}}}}
    changed_hat = {**HAT, "params": {"grace_period": 100}}
    edited = spec(STEADY, changed_agile, changed_hat)
    with pytest.raises(CandidateChangedError) as raised:
        ModelTrainer.restore(trainer.snapshot(), edited)
    assert raised.value.candidates == ("sea/agile", "sea/hat")
    assert isinstance(raised.value, ConfigError)
    assert "--reset-candidate" in str(raised.value)
    with pytest.raises(CandidateChangedError, match=r"\['sea/hat'\]"):
        ModelTrainer.restore(trainer.snapshot(), edited, reset={"agile"})

    restored, changes = ModelTrainer.restore(trainer.snapshot(), edited, reset={"agile", "hat"})
    assert changes.reset == ("agile", "hat")
    assert restored.learned == {"steady": 600, "agile": 0, "hat": 0}
    assert restored.candidate("agile").model["LogisticRegression"].optimizer.learning_rate == 0.2
    assert restored.champion == "steady" and changes.vacated is None


def test_a_reset_champion_leaves_the_title_vacant():
    trainer = trained()
    edited = spec({**STEADY, "params": {"LogisticRegression": {"l2": 0.1}}}, AGILE)
    restored, changes = ModelTrainer.restore(trainer.snapshot(), edited, reset=["steady"])
    assert changes.reset == ("steady",) and changes.vacated == "steady"
    assert restored.champion is None and restored.champion_version == 1
    assert restored.report()["champion_vacated"] == "champion 'steady' was reset"


def test_reset_is_idempotent_for_unchanged_healthy_candidates():
    trainer = trained()
    restored, changes = ModelTrainer.restore(trainer.snapshot(), spec(), reset={"agile", "nosuch"})
    assert (changes.reset, changes.reset_ignored, changes.reset_unknown) == (
        (),
        ("agile",),
        ("nosuch",),
    )
    assert restored.report() == trainer.report()


def test_reset_restarts_a_quarantined_candidate():
    trainer = trained()
    trainer.learn({"x0": "oops", "x1": 1.0, "x2": 1.0}, True, source="s", position=600)
    assert set(trainer.quarantined) == {"steady", "agile"}
    restored, changes = ModelTrainer.restore(trainer.snapshot(), spec(), reset={"agile"})
    assert changes.reset == ("agile",)
    assert list(restored.quarantined) == ["steady"]
    feed(restored, 10, start=601)
    assert restored.learned == {"steady": 600, "agile": 10}


def test_candidates_follow_the_configuration_order():
    trainer = trained(STEADY, AGILE, HAT)
    restored, changes = ModelTrainer.restore(trainer.snapshot(), spec(HAT, AGILE, STEADY))
    assert not changes
    assert list(restored.learned) == ["hat", "agile", "steady"]
    assert list(restored.report()["candidates"]) == ["hat", "agile", "steady"]


def test_another_model_or_task_is_refused():
    blob = trained().snapshot()
    with pytest.raises(ConfigError, match="cannot be restored as 'other'"):
        ModelTrainer.restore(blob, spec(name="other"))
    regression = ModelSpec.from_dict(
        "sea", {"task": "regression", "candidates": [{"name": "lin", "river": "LinearRegression"}]}
    )
    with pytest.raises(ConfigError, match="task changed from classification to regression"):
        ModelTrainer.restore(blob, regression)
