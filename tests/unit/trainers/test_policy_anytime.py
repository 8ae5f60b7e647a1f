"""The promotions' paired test stays valid under repeated looks, across challengers and restarts.

Simulated streams of error bits, looked at after *every* event (the most looks a policy can take):
with equally good challengers, the share of runs in which any challenger is ever promoted must
stay below the model's alpha, within three standard errors of the simulated rate. The bounds
are computed for whole runs at once (`trainers.guardrail.confidence_sequence`), which is checked
to be exactly what `PairedTests` computes event by event.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainers.guardrail import confidence_sequence
from trainers.sequential import PairedTests, round_alpha
from trainers.significance import mcnemar

ALPHA, RUNS, EVENTS, ERROR = 0.1, 500, 2000, 0.2
# Three standard errors of a rate of ALPHA measured on RUNS runs.
TOLERANCE = 3 * math.sqrt(ALPHA * (1 - ALPHA) / RUNS)


def lower_bounds(champion, challenger, alpha):
    """The pair test's lower bound on the mean loss difference after each event (rows: runs)."""
    lower, _ = confidence_sequence((1 + champion - challenger) / 2, 2 * alpha)
    return 2 * lower - 1


def errors(rng, shape, rate=ERROR):
    return (rng.random(shape) < rate).astype(np.float64)


def test_the_vectorised_bounds_are_those_of_paired_tests():
    rng = np.random.default_rng(0)
    champion, challengers = errors(rng, 500), errors(rng, (2, 500))
    tests = PairedTests(ALPHA)
    lowers = {"a": [], "b": []}
    for i in range(500):
        losses = {"a": challengers[0, i], "b": challengers[1, i]}
        tests.observe("champ", losses, defender_loss=champion[i], event=i + 1)
        for name, test in tests.of("champ").items():
            lowers[name].append(test.lower)
    share = round_alpha(ALPHA, 1) / 2
    for row, name in enumerate("ab"):
        expected = lower_bounds(champion, challengers[row], share)
        np.testing.assert_allclose(lowers[name], expected, rtol=0, atol=1e-12)


def test_equally_good_challengers_are_rarely_ever_promoted_however_often_one_looks():
    rng = np.random.default_rng(1)
    champion = errors(rng, (RUNS, EVENTS))
    share = round_alpha(ALPHA, 1) / 3
    ever = np.zeros(RUNS, dtype=bool)
    for _ in range(3):  # three challengers, one round
        ever |= (lower_bounds(champion, errors(rng, (RUNS, EVENTS)), share) > 0).any(axis=1)
    assert ever.mean() <= ALPHA + TOLERANCE


def test_restarts_spend_alpha_so_that_the_whole_life_stays_below_it():
    # Ten restarts (a drift of the champion, say) of one challenger's test, each a new round.
    rng = np.random.default_rng(2)
    ever = np.zeros(RUNS, dtype=bool)
    for round_number in range(1, 11):
        champion, challenger = errors(rng, (RUNS, 300)), errors(rng, (RUNS, 300))
        alpha = round_alpha(ALPHA, round_number)
        ever |= (lower_bounds(champion, challenger, alpha) > 0).any(axis=1)
    assert ever.mean() <= ALPHA + TOLERANCE


def test_a_challenger_worse_at_times_and_never_better_is_rarely_promoted():
    # The null is about every event's conditional mean: here the challenger is as good on even
    # events and worse on odd ones.
    rng = np.random.default_rng(3)
    champion = errors(rng, (RUNS, EVENTS))
    rates = np.where(np.arange(EVENTS) % 2 == 0, ERROR, ERROR + 0.1)
    challenger = (rng.random((RUNS, EVENTS)) < rates).astype(np.float64)
    assert (lower_bounds(champion, challenger, round_alpha(ALPHA, 1)) > 0).any(axis=1).mean() <= (
        ALPHA + TOLERANCE
    )


def test_the_old_rule_repeated_at_every_look_promotes_far_more_often_than_alpha():
    # What the anytime-valid test replaces: McNemar at alpha, re-run every 100 events on a
    # sliding window of 1,000 (no correction), on the same kind of streams.
    rng = np.random.default_rng(4)
    runs = 200
    champion, challenger = errors(rng, (runs, EVENTS)), errors(rng, (runs, EVENTS))
    ever = [
        any(
            mcnemar(champion[run, end - 1000 : end], challenger[run, end - 1000 : end]).p_value
            < ALPHA
            for end in range(1000, EVENTS + 1, 100)
        )
        for run in range(runs)
    ]
    assert np.mean(ever) > 2 * ALPHA


@pytest.mark.parametrize("better_by", [0.05, 0.1])
def test_a_really_better_challenger_is_found(better_by):
    rng = np.random.default_rng(5)
    champion = errors(rng, (100, 2 * EVENTS))
    challenger = errors(rng, (100, 2 * EVENTS), rate=ERROR - better_by)
    found = (lower_bounds(champion, challenger, round_alpha(ALPHA, 1)) > 0).any(axis=1)
    assert found.mean() >= 0.9
