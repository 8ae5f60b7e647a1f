"""Promotion rules: initial choice, margin, significance, cooldown, direction, ties."""

from __future__ import annotations

import pytest

from trainers.errors import ConfigError
from trainers.metrics import PrequentialScore
from trainers.policy import PromotionPolicy

POLICY = PromotionPolicy(warmup=10, every=10, min_samples=100, margin=0.05, alpha=0.01, cooldown=50)


def classification_scores(accuracies, n=100, history=100):
    """Scores whose candidates are right on the first round(acc * n) events of n."""
    scores = {}
    for name, accuracy in accuracies.items():
        score = PrequentialScore("classification", window=history, history=history)
        right = round(accuracy * n)
        for i in range(n):
            score.update(True, i < right, {True: 0.9 if i < right else 0.1, False: 0.0})
        scores[name] = score
    return scores


def test_nothing_before_warmup():
    scores = classification_scores({"a": 0.5, "b": 0.9}, n=5)
    assert POLICY.decide(events=5, champion=None, since_promotion=5, scores=scores) is None


def test_initial_prefers_configured_champion():
    scores = classification_scores({"a": 0.5, "b": 0.9}, n=10)
    decision = POLICY.decide(
        events=10, champion=None, since_promotion=10, scores=scores, preferred="a"
    )
    assert (decision.kind, decision.candidate) == ("initial", "a")
    assert decision.evidence["window"] == [1, 10]
    assert decision.evidence["candidates"] == {"a": 0.5, "b": 0.9}


def test_initial_picks_best_and_ties_go_to_first_listed():
    scores = classification_scores({"a": 0.5, "b": 0.9, "c": 0.9}, n=10)
    decision = POLICY.decide(events=10, champion=None, since_promotion=10, scores=scores)
    assert decision.candidate == "b"
    assert "best accuracy" in decision.reason


def test_challenger_needs_margin_significance_samples_and_no_cooldown():
    scores = classification_scores({"champ": 0.7, "better": 0.9, "close": 0.73})
    kwargs = {"events": 100, "champion": "champ", "scores": scores}
    decision = POLICY.decide(since_promotion=50, **kwargs)
    assert (decision.kind, decision.candidate) == ("challenger", "better")
    evidence = decision.evidence
    assert evidence["window"] == [1, 100]
    assert evidence["n"] == 100
    assert (evidence["champion_metric"], evidence["challenger_metric"]) == (0.7, 0.9)
    assert evidence["test"] == "mcnemar"
    assert evidence["p_value"] < 0.01
    assert (evidence["margin"], evidence["alpha"]) == (0.05, 0.01)
    assert POLICY.decide(since_promotion=49, **kwargs) is None  # cooldown
    short = classification_scores({"champ": 0.7, "better": 0.9}, n=99)
    assert POLICY.decide(events=99, champion="champ", since_promotion=99, scores=short) is None


def test_no_promotion_without_significance():
    scores = classification_scores({"champ": 0.9, "better": 0.96})  # 6 discordant events
    lenient_margin = PromotionPolicy(min_samples=100, margin=0.01, alpha=0.01, cooldown=0)
    assert (
        lenient_margin.decide(events=100, champion="champ", since_promotion=100, scores=scores)
        is None
    )


def test_best_of_several_qualifying_challengers_wins():
    scores = classification_scores({"champ": 0.5, "good": 0.8, "best": 0.95})
    decision = POLICY.decide(events=100, champion="champ", since_promotion=100, scores=scores)
    assert decision.candidate == "best"


def test_lower_is_better_for_log_loss():
    scores = classification_scores({"champ": 0.6, "better": 0.95})
    policy = PromotionPolicy(metric="log_loss", min_samples=100, margin=0.1, cooldown=0)
    decision = policy.decide(events=100, champion="champ", since_promotion=100, scores=scores)
    assert decision.candidate == "better"
    assert decision.evidence["challenger_metric"] < decision.evidence["champion_metric"]


def test_candidate_without_probabilities_cannot_win_on_log_loss():
    scores = classification_scores({"champ": 0.6})
    no_proba = PrequentialScore("classification", window=100)
    for _ in range(100):
        no_proba.update(True, True)
    scores["perfect"] = no_proba
    policy = PromotionPolicy(metric="log_loss", min_samples=100, margin=0.1, cooldown=0)
    assert policy.decide(events=100, champion="champ", since_promotion=100, scores=scores) is None


def regression_scores(errors):
    scores = {}
    for name, error in errors.items():
        score = PrequentialScore("regression", window=200)
        for i in range(200):
            score.update(0.0, error + (i % 7) * 0.01)
        scores[name] = score
    return scores


def test_regression_uses_wilcoxon_and_lower_mae():
    policy = PromotionPolicy(metric="mae", min_samples=200, margin=0.1, cooldown=0)
    scores = regression_scores({"champ": 1.0, "better": 0.5, "worse": 2.0})
    decision = policy.decide(events=200, champion="champ", since_promotion=200, scores=scores)
    assert decision.candidate == "better"
    assert decision.evidence["test"] == "wilcoxon"


def test_regression_candidate_with_missing_predictions_is_refused():
    policy = PromotionPolicy(metric="mae", min_samples=200, margin=0.1, cooldown=0)
    scores = regression_scores({"champ": 1.0})
    gappy = PrequentialScore("regression", window=200)
    for i in range(200):
        gappy.update(0.0, None if i == 0 else 0.0)
    scores["gappy"] = gappy
    assert policy.decide(events=200, champion="champ", since_promotion=200, scores=scores) is None


def test_due_at_warmup_and_every():
    policy = PromotionPolicy(warmup=750, every=500)
    assert [e for e in range(1, 2001) if policy.due(e)] == [750, 1000, 1500, 2000]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"metric": "auc"}, "does not fit classification"),
        ({"warmup": 0}, "policy.warmup must be a positive integer"),
        ({"every": True}, "policy.every must be a positive integer"),
        ({"alpha": 1.5}, r"policy.alpha must be a number in \(0, 1\)"),
        ({"margin": -0.1}, "policy.margin must be a number >= 0"),
        ({"cooldown": 1.5}, "policy.cooldown must be a non-negative integer"),
        ({"patience": 3}, "unknown settings"),
    ],
)
def test_bad_settings(settings, message):
    with pytest.raises(ConfigError, match=message):
        PromotionPolicy.from_dict(settings, "classification")
