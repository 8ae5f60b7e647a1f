"""Canary guardrail and stable monitor: decisions, evidence, the CS against confseq, validity."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from trainers.errors import ConfigError
from trainers.guardrail import (
    CanaryGuardrail,
    ConfidenceSequence,
    StableMonitor,
    confidence_sequence,
    outcome_loss,
)

STEPS = np.arange(1, 301)
SEQUENCES = {
    "graded": ((STEPS * 7919) % 101) / 100,  # losses spread over [0, 1]
    "bits": (STEPS * 37 % 7 == 0).astype(float),  # error bits, about one in seven
}
# confseq 0.0.11 (PyPI sdist; its pure-Python `predmix` module, numpy 1.26):
#   l, u = predmix_empbern_twosided_cs(x, alpha=alpha, running_intersection=True)
# read at t = 1, 10, 50, 100, 300.
CONFSEQ = {
    ("graded", 0.05): [
        (0.0, 1.0),
        (0.0, 1.0),
        (0.3130182494768692, 0.6817430733580495),
        (0.39614210816715223, 0.6138382197763534),
        (0.44285212935168516, 0.5591844739662312),
    ],
    ("graded", 0.2): [
        (0.0, 1.0),
        (0.0, 0.9511087285043432),
        (0.3696016927878851, 0.6257244208166604),
        (0.42321047125265204, 0.5859770439644612),
        (0.45478871302209006, 0.5475256878488715),
    ],
    ("bits", 0.05): [
        (0.0, 1.0),
        (0.0, 0.9169036104437019),
        (0.0, 0.3317125909913331),
        (0.017259049358953893, 0.2643614476575895),
        (0.071832776718426, 0.21259273195059825),
    ],
    ("bits", 0.2): [
        (0.0, 1.0),
        (0.0, 0.6396447382197238),
        (0.0, 0.2752552024806507),
        (0.04600387064673678, 0.2365316681568479),
        (0.08546630151828946, 0.19930141787657008),
    ],
}
TIMES = [1, 10, 50, 100, 300]


@pytest.mark.parametrize(("name", "alpha"), list(CONFSEQ))
def test_confidence_sequence_matches_confseq(name, alpha):
    x = SEQUENCES[name]
    lower, upper = confidence_sequence(x, alpha)
    cs = ConfidenceSequence(alpha)
    streamed = []
    for loss in x:
        cs.update(float(loss))
        streamed.append((cs.lower, cs.upper))
    for t, (low, high) in zip(TIMES, CONFSEQ[name, alpha], strict=True):
        assert lower[t - 1] == pytest.approx(low, abs=1e-12)
        assert upper[t - 1] == pytest.approx(high, abs=1e-12)
        assert streamed[t - 1] == pytest.approx((low, high), abs=1e-12)


def test_confidence_sequence_matches_confseq_live():
    """The same against an installed confseq, when there is one (it needs Boost to build)."""
    predmix = pytest.importorskip("confseq.predmix")
    x = np.random.default_rng(3).beta(2, 5, size=2000)
    expected = predmix.predmix_empbern_twosided_cs(x, alpha=0.05, running_intersection=True)
    np.testing.assert_allclose(confidence_sequence(x, 0.05), expected, atol=1e-12)


def test_vectorised_equals_streaming_row_by_row():
    x = np.random.default_rng(0).random((3, 500))
    lower, upper = confidence_sequence(x, 0.1)
    for row in range(3):
        cs = ConfidenceSequence(0.1)
        for t, loss in enumerate(x[row]):
            cs.update(float(loss))
            assert (cs.lower, cs.upper) == pytest.approx((lower[row, t], upper[row, t]), abs=1e-12)


def test_confidence_sequence_covers_at_all_times_by_simulation():
    """Reference: the fraction of simulated streams whose CS ever misses the mean is <= alpha."""
    alpha, mean = 0.1, 0.3
    x = (np.random.default_rng(7).random((2000, 3000)) < mean).astype(float)
    lower, upper = confidence_sequence(x, alpha)
    ever_missed = ((lower > mean) | (upper < mean)).any(axis=1).mean()
    assert ever_missed <= alpha
    # Bounds only shrink (running intersection) and stay in [0, 1].
    assert (np.diff(lower, axis=1) >= 0).all() and (np.diff(upper, axis=1) <= 0).all()
    assert (lower >= 0).all() and (upper <= 1).all()


def test_losses():
    assert outcome_loss("classification", 1, 0) == 1.0
    assert outcome_loss("classification", 1, None) == 1.0
    assert outcome_loss("regression", 10.0, 12.5, scale=5.0) == 0.5
    assert outcome_loss("regression", 10.0, 100.0, scale=5.0) == 1.0
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ConfidenceSequence().update(1.5)
    with pytest.raises(ValueError, match="arm"):
        CanaryGuardrail("classification").update("shadow", 1, 1)


def feed(guard, canary_losses, stable_losses):
    """Interleaves one canary outcome with nine stable ones; returns the first final decision."""
    stable = iter(stable_losses)
    for loss in canary_losses:
        guard.update_loss("canary", float(loss))
        for _ in range(9):
            guard.update_loss("stable", float(next(stable)))
        decision = guard.decide()
        if decision.kind != "continue":
            return decision
    return guard.decide()


def bits(accuracy, n, seed):
    return np.random.default_rng(seed).random(n) >= accuracy


def test_worse_canary_is_rolled_back_with_evidence():
    guard = CanaryGuardrail("classification", alpha=0.05, tolerance=0.02, min_outcomes=500)
    decision = feed(guard, bits(0.6, 5000, 1), bits(0.9, 45000, 2))
    assert decision.kind == "rollback"
    evidence = decision.evidence
    assert evidence["lower"] > 0
    assert evidence["lower"] <= evidence["difference"] <= evidence["upper"]
    assert evidence["n_stable"] == 9 * evidence["n_canary"]
    assert evidence["canary_bounds"][0] - evidence["stable_bounds"][1] == evidence["lower"]
    assert evidence["canary_loss"] == pytest.approx(0.4, abs=0.15)
    assert (evidence["alpha"], evidence["tolerance"], evidence["min_outcomes"]) == (0.05, 0.02, 500)
    assert "empirical-Bernstein" in evidence["method"]
    assert "worse" in decision.reason
    # Final: more good canary outcomes do not undo it.
    for _ in range(100):
        guard.update_loss("canary", 0.0)
    assert guard.decide() is decision


def test_equal_canary_is_rolled_out_after_min_outcomes():
    guard = CanaryGuardrail("classification", alpha=0.05, tolerance=0.1, min_outcomes=2000)
    decision = feed(guard, bits(0.9, 20000, 3), bits(0.9, 180000, 4))
    assert decision.kind == "rollout"
    evidence = decision.evidence
    assert evidence["upper"] <= 0.1 and evidence["lower"] <= 0
    assert min(evidence["n_canary"], evidence["n_stable"]) >= 2000


def test_better_canary_is_rolled_out_and_not_before_min_outcomes():
    guard = CanaryGuardrail("classification", tolerance=0.0, min_outcomes=100)
    for _ in range(99):
        guard.update("canary", 1, 1)
        guard.update("stable", 1, 0)
    assert guard.decide().kind == "continue"  # the evidence is there, the count is not
    guard.update("canary", 1, 1)
    guard.update("stable", 1, 0)
    assert guard.decide().kind == "rollout"


def test_regression_uses_scaled_clipped_errors():
    guard = CanaryGuardrail("regression", scale=10.0, min_outcomes=50)
    for i in range(400):
        guard.update("stable", 0.0, 1.0)  # loss 0.1
        guard.update("canary", 0.0, 100.0 if i % 2 else 5.0)  # loss 1 or 0.5
        if guard.decide().kind != "continue":
            break
    decision = guard.decide()
    assert decision.kind == "rollback"
    assert decision.evidence["stable_loss"] == pytest.approx(0.1)
    assert decision.evidence["scale"] == 10.0


def test_nothing_is_decided_without_outcomes():
    decision = CanaryGuardrail("classification").decide()
    assert decision.kind == "continue"
    assert (decision.evidence["lower"], decision.evidence["upper"]) == (-1.0, 1.0)
    assert decision.evidence["difference"] is None


def test_snapshot_by_pickle_resumes_identically():
    guard = CanaryGuardrail("classification", min_outcomes=10)
    losses = bits(0.8, 300, 5)
    for loss in losses[:150]:
        guard.update_loss("canary", float(loss))
        guard.update_loss("stable", 0.0)
    copy = pickle.loads(pickle.dumps(guard))
    for loss in losses[150:]:
        for g in (guard, copy):
            g.update_loss("canary", float(loss))
            g.update_loss("stable", 0.0)
    assert copy.decide() == guard.decide()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"task": "ranking"}, "task"),
        ({"task": "regression"}, "scale"),
        ({"task": "classification", "alpha": 1.0}, "alpha"),
        ({"task": "classification", "alpha": True}, "alpha"),
        ({"task": "classification", "tolerance": -0.1}, "tolerance"),
        ({"task": "classification", "min_outcomes": 0}, "min_outcomes"),
    ],
)
def test_bad_settings(settings, message):
    with pytest.raises(ConfigError, match=message):
        CanaryGuardrail(**settings)


def test_monitor_alerts_on_a_late_drop_not_before():
    monitor = StableMonitor("classification", reference=0.9, tolerance=0.02, alpha=0.05)
    losses = np.concatenate([bits(0.9, 20000, 6), bits(0.75, 5000, 7)])
    alert_at = None
    for t, loss in enumerate(losses, start=1):
        monitor.update_loss(float(loss))
        if monitor.decide().kind == "alert":
            alert_at = t
            break
    assert alert_at is not None and 20000 < alert_at < 22000
    evidence = monitor.decide().evidence
    assert evidence["e_value"] >= evidence["threshold"] == 20.0
    assert evidence["reference_loss"] == pytest.approx(0.1)
    assert evidence["reference_source"] == "given"
    assert "e-process" in evidence["method"]


def test_monitor_measures_its_reference_during_warmup():
    monitor = StableMonitor("classification", warmup=2000, tolerance=0.02, alpha=0.05)
    for loss in bits(0.9, 2000, 8):
        assert monitor.decide().kind == "continue"
        monitor.update_loss(float(loss))
    assert monitor.n == 0
    evidence = monitor.decide().evidence
    # The upper confidence bound of the warmup's error rate, at alpha / 2.
    assert 0.1 < evidence["reference_loss"] < 0.13
    assert evidence["threshold"] == 40.0
    for loss in bits(0.6, 3000, 9):
        monitor.update_loss(float(loss))
    assert monitor.decide().kind == "alert"


def test_monitor_false_alerts_stay_below_alpha_at_the_edge_of_the_null():
    """Mean loss exactly at reference + tolerance for 2,000 outcomes, 200 runs."""
    rng = np.random.default_rng(11)
    alerts = 0
    for _ in range(200):
        monitor = StableMonitor("classification", reference=0.82, tolerance=0.03, alpha=0.05)
        for loss in rng.random(2000) < 0.21:
            monitor.update_loss(float(loss))
        alerts += monitor.decide().kind == "alert"
    assert alerts <= 10  # alpha * 200; Ville's inequality makes it an upper bound


def test_monitor_pickles_and_rejects_bad_settings():
    monitor = StableMonitor("regression", reference=2.0, scale=4.0)
    monitor.update(1.0, 2.0)
    copy = pickle.loads(pickle.dumps(monitor))
    assert copy.decide() == monitor.decide()
    with pytest.raises(ConfigError, match="tolerance"):
        StableMonitor("classification", tolerance=0.0)
    with pytest.raises(ConfigError, match="reference"):
        StableMonitor("classification", reference=1.5)
