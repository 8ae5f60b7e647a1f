"""Promotion rules: initial choice, margin, anytime-valid tests, cooldown, direction, ties."""

from __future__ import annotations

import math

import pytest

from trainers.errors import ConfigError
from trainers.metrics import PrequentialScore, event_loss
from trainers.policy import DEFAULT_LOG_LOSS_SCALE, PromotionPolicy
from trainers.sequential import METHOD, PairedTests

POLICY = PromotionPolicy(warmup=10, every=10, min_samples=100, margin=0.05, alpha=0.01, cooldown=50)


def compete(policy, outcomes, champion, task="classification"):
    """Score each candidate's ``(y_true, y_pred, proba)`` outcomes and run the champion's paired
    tests on them, as the trainer does; return (scores, the champion's tests)."""
    n = len(next(iter(outcomes.values())))
    scores = {name: PrequentialScore(task, window=n) for name in outcomes}
    tests = PairedTests(policy.alpha)
    for i in range(n):
        losses = {}
        for name, events in outcomes.items():
            scores[name].update(*events[i])
            losses[name] = policy.bounded_loss(event_loss(policy.metric, *events[i]))
        tests.observe(champion, losses, defender_loss=losses[champion], event=i + 1)
    return scores, tests.of(champion)


def right_on(accuracy, n=400, period=20):
    """Classification outcomes right on round(accuracy * period) of every `period` events."""
    right = round(accuracy * period)
    return [
        (True, i % period < right, {True: 0.9 if i % period < right else 0.1, False: 0.0})
        for i in range(n)
    ]


def classification_scores(accuracies, n=10):
    scores = {}
    for name, accuracy in accuracies.items():
        scores[name] = PrequentialScore("classification", window=n)
        for event in right_on(accuracy, n, period=n):
            scores[name].update(*event)
    return scores


def test_nothing_before_warmup():
    scores = classification_scores({"a": 0.5, "b": 0.9}, n=5)
    assert POLICY.decide(events=5, champion=None, since_promotion=5, scores=scores) is None


def test_initial_prefers_configured_champion():
    scores = classification_scores({"a": 0.5, "b": 0.9})
    decision = POLICY.decide(
        events=10, champion=None, since_promotion=10, scores=scores, preferred="a"
    )
    assert (decision.kind, decision.candidate) == ("initial", "a")
    assert decision.evidence["window"] == [1, 10]
    assert decision.evidence["candidates"] == {"a": 0.5, "b": 0.9}


def test_initial_picks_best_and_ties_go_to_first_listed():
    scores = classification_scores({"a": 0.5, "b": 0.9, "c": 0.9})
    decision = POLICY.decide(events=10, champion=None, since_promotion=10, scores=scores)
    assert decision.candidate == "b"
    assert "best accuracy" in decision.reason


def test_challenger_needs_margin_significance_samples_and_no_cooldown():
    outcomes = {"champ": right_on(0.7), "better": right_on(0.9), "close": right_on(0.75)}
    scores, tests = compete(POLICY, outcomes, "champ")
    kwargs = {"events": 400, "champion": "champ", "scores": scores, "tests": tests}
    decision = POLICY.decide(since_promotion=50, **kwargs)
    assert (decision.kind, decision.candidate) == ("challenger", "better")
    evidence = decision.evidence
    assert (evidence["window"], evidence["n"]) == ([1, 400], 400)
    assert (evidence["champion_metric"], evidence["challenger_metric"]) == (0.7, 0.9)
    assert evidence["test"] == METHOD and evidence["p_value"] is None
    assert evidence["statistic"] == pytest.approx(0.2)
    assert evidence["lower"] > evidence["threshold"] == 0.05
    # Two challengers started in round 1: each gets half of alpha * 6 / pi^2.
    assert evidence["alpha_spent"] == pytest.approx(0.01 * 6 / math.pi**2 / 2)
    assert (evidence["round"], evidence["challengers"], evidence["qualified"]) == (1, 2, 1)
    assert (evidence["margin"], evidence["alpha"]) == (0.05, 0.01)
    assert POLICY.decide(since_promotion=49, **kwargs) is None  # cooldown
    # "close" is better, but only by the margin: its lower bound stays below it.
    assert tests["close"].mean == pytest.approx(0.05) and tests["close"].lower < 0.05
    short_scores, short_tests = compete(
        POLICY, {name: events[:99] for name, events in outcomes.items()}, "champ"
    )
    short = {"events": 99, "champion": "champ", "scores": short_scores, "tests": short_tests}
    assert POLICY.decide(since_promotion=99, **short) is None  # fewer than min_samples


def test_no_promotion_without_significance():
    # Better by 0.06 on 100 events: above the margin, but not significantly.
    outcomes = {"champ": right_on(0.9, n=100, period=50), "better": right_on(0.96, 100, 50)}
    policy = PromotionPolicy(min_samples=100, margin=0.01, alpha=0.01, cooldown=0)
    scores, tests = compete(policy, outcomes, "champ")
    assert tests["better"].mean == pytest.approx(0.06) and tests["better"].lower < 0.01
    assert (
        policy.decide(events=100, champion="champ", since_promotion=100, scores=scores, tests=tests)
        is None
    )


def test_the_highest_lower_bound_of_several_qualifying_challengers_wins():
    outcomes = {"champ": right_on(0.5), "good": right_on(0.8), "best": right_on(0.95)}
    scores, tests = compete(POLICY, outcomes, "champ")
    decision = POLICY.decide(
        events=400, champion="champ", since_promotion=400, scores=scores, tests=tests
    )
    assert (decision.candidate, decision.evidence["qualified"]) == ("best", 2)


def test_lower_is_better_for_log_loss():
    policy = PromotionPolicy(metric="log_loss", min_samples=100, margin=0.1, cooldown=0)
    outcomes = {"champ": right_on(0.6), "better": right_on(0.95)}
    scores, tests = compete(policy, outcomes, "champ")
    decision = policy.decide(
        events=400, champion="champ", since_promotion=400, scores=scores, tests=tests
    )
    assert decision.candidate == "better"
    assert decision.evidence["challenger_metric"] < decision.evidence["champion_metric"]
    assert decision.evidence["loss_scale"] == DEFAULT_LOG_LOSS_SCALE
    assert decision.evidence["threshold"] == pytest.approx(0.1 / math.log(1000))


def test_candidate_without_probabilities_cannot_win_on_log_loss():
    policy = PromotionPolicy(metric="log_loss", min_samples=100, margin=0.1, cooldown=0)
    outcomes = {"champ": right_on(0.6), "perfect": [(True, True, None)] * 400}
    scores, tests = compete(policy, outcomes, "champ")
    assert (
        policy.decide(events=400, champion="champ", since_promotion=400, scores=scores, tests=tests)
        is None
    )


def regression_outcomes(error, n=300):
    return [(0.0, error + (i % 7) * 0.01, None) for i in range(n)]


def test_regression_compares_clipped_scaled_absolute_errors():
    policy = PromotionPolicy(metric="mae", min_samples=200, margin=0.1, cooldown=0, loss_scale=4.0)
    outcomes = {
        "champ": regression_outcomes(1.0),
        "better": regression_outcomes(0.5),
        "worse": regression_outcomes(2.0),
    }
    scores, tests = compete(policy, outcomes, "champ", task="regression")
    decision = policy.decide(
        events=300, champion="champ", since_promotion=300, scores=scores, tests=tests
    )
    assert decision.candidate == "better"
    assert decision.evidence["statistic"] == pytest.approx(0.5 / 4.0)
    assert decision.evidence["threshold"] == pytest.approx(0.1 / 4.0)


def test_regression_candidate_with_missing_predictions_is_refused():
    policy = PromotionPolicy(metric="mae", min_samples=200, margin=0.1, cooldown=0, loss_scale=4.0)
    gappy = [(0.0, None if i == 0 else 0.0, None) for i in range(300)]
    outcomes = {"champ": regression_outcomes(1.0), "gappy": gappy}
    scores, tests = compete(policy, outcomes, "champ", task="regression")
    assert tests["gappy"].lower > policy.loss_margin  # better, but its MAE misses an event
    assert (
        policy.decide(events=300, champion="champ", since_promotion=300, scores=scores, tests=tests)
        is None
    )


@pytest.mark.parametrize(
    ("metric", "scale", "loss", "bounded", "margin"),
    [
        ("accuracy", None, 1.0, 1.0, 0.05),
        ("log_loss", None, math.log(10), 1 / 3, 0.05 / math.log(1000)),
        ("log_loss", 2.0, 50.0, 1.0, 0.025),
        ("mae", 4.0, 1.0, 0.25, 0.0125),
        ("rmse", 4.0, 4.0, 0.25, (0.05 / 4) ** 2),  # the loss is the squared error
    ],
)
def test_bounded_losses_and_margins_per_metric(metric, scale, loss, bounded, margin):
    policy = PromotionPolicy(metric=metric, margin=0.05, loss_scale=scale)
    assert policy.bounded_loss(loss) == pytest.approx(bounded)
    assert policy.bounded_loss(None) == 1.0
    assert policy.loss_margin == pytest.approx(margin)


def test_a_regression_loss_without_a_scale_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"policy\.loss_scale is required to compare mae"):
        PromotionPolicy(metric="mae").bounded_loss(1.0)


def test_due_at_warmup_and_every():
    policy = PromotionPolicy(warmup=750, every=500)
    assert [e for e in range(1, 2001) if policy.due(e)] == [750, 1000, 1500, 2000]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"metric": "auc"}, "does not fit classification"),
        ({"metric": "f1"}, "F1 is no mean of per-event losses"),
        ({"warmup": 0}, "policy.warmup must be a positive integer"),
        ({"every": True}, "policy.every must be a positive integer"),
        ({"alpha": 0.6}, r"policy.alpha must be a number in \(0, 0.5\]"),
        ({"margin": -0.1}, "policy.margin must be a number >= 0"),
        ({"cooldown": 1.5}, "policy.cooldown must be a non-negative integer"),
        ({"loss_scale": 0}, "policy.loss_scale must be a positive number"),
        ({"loss_scale": 2.0}, "policy.loss_scale is for"),
        ({"patience": 3}, "unknown settings"),
    ],
)
def test_bad_settings(settings, message):
    with pytest.raises(ConfigError, match=message):
        PromotionPolicy.from_dict(settings, "classification")
