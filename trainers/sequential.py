"""Anytime-valid paired comparisons of two learners, and the alpha they spend.

A `PairedTest` compares a *defender* (the champion, or the served copy for a refresh) with a
*challenger* on the events both scored since the test started. On each event it takes the
difference ``d = defender_loss - challenger_loss`` of their bounded losses in [0, 1] (positive:
the challenger did better) and keeps a lower confidence bound on the mean of ``d`` that holds at
every event at once, however often it is looked at and whenever one stops: the predictable-mixture
empirical-Bernstein confidence sequence (CS) of Waudby-Smith & Ramdas (2023) on
``(1 + d) / 2``, which lies in [0, 1] (`trainers.guardrail.ConfidenceSequence`, tested against
confseq). That CS is two-sided at level ``2 a`` with ``a`` per side, so its lower bound alone is
a one-sided bound at level ``a``, the test's share of alpha. The bound is on a (bet-weighted)
average of the conditional means of ``d`` given the past, so the guarantee needs neither
independent nor identically distributed events (Howard et al. 2021): under the null "at every
event, the challenger's expected loss given the past is not below the defender's by more than
``m``", the probability that the lower bound *ever* exceeds ``m`` is at most ``a``.

`PairedTests` keeps the tests of a model and spends its ``alpha``. A test starts at the first
event a pair is observed; all the pairs that start at the same event form a *round*. Round
``r`` gets ``alpha * 6 / (pi^2 r^2)`` (these sum to ``alpha`` over every round ever started),
shared equally among its ``m`` pairs (Bonferroni; for "promote if any challenger wins" Holm's
first step is this same threshold, so Holm would promote no sooner). By the union bound, the
probability that any test of the model's whole life ever wrongly rejects is at most ``alpha``,
however many challengers, restarts and looks there are. Restarting (`forget`, `clear`) is what
lets a challenger that became better after a drift win quickly, instead of paying back the
evidence piled up against it before; the price is the smaller share of later rounds, which
widens the bound only like ``sqrt(log r)``.

Examples
--------
>>> from trainers.sequential import PairedTests, round_alpha
>>> round(round_alpha(0.05, 1), 4), round(round_alpha(0.05, 2), 4)
(0.0304, 0.0076)
>>> tests = PairedTests(alpha=0.05)
>>> for i in range(2000):
...     champion_loss = float(i % 4 == 0)  # wrong on a quarter of the events
...     challenger_loss = float(i % 10 == 0)  # wrong on a tenth
...     tests.observe("champ", {"new": challenger_loss, "old": champion_loss},
...                   defender_loss=champion_loss, event=i + 1)
>>> test = tests.of("champ")["new"]
>>> test.n, test.round, test.pairs, round(test.mean, 3), round(test.lower, 3)
(2000, 1, 2, 0.15, 0.108)
>>> tests.of("champ")["old"].lower <= 0 <= tests.of("champ")["old"].upper
True

References
----------
[^1]: Waudby-Smith, I. and Ramdas, A., 2023. Estimating means of bounded random variables by
    betting. Journal of the Royal Statistical Society, Series B, 86(1), pp. 1-27.
[^2]: Howard, S.R., Ramdas, A., McAuliffe, J. and Sekhon, J., 2021. Time-uniform, nonparametric,
    nonasymptotic confidence sequences. The Annals of Statistics, 49(2), pp. 1055-1080.
[^3]: Holm, S., 1979. A simple sequentially rejective multiple test procedure. Scandinavian
    Journal of Statistics, 6(2), pp. 65-70.
[^4]: Foster, D.P. and Stine, R.A., 2008. Alpha-investing: a procedure for sequential control of
    expected false discoveries. Journal of the Royal Statistical Society, Series B, 70(2),
    pp. 429-444 (spending a level over an unbounded sequence of tests).

"""

from __future__ import annotations

import math
from collections.abc import Mapping

from trainers.guardrail import ConfidenceSequence

__all__ = ["METHOD", "PairedTest", "PairedTests", "round_alpha"]

METHOD = "anytime-valid paired empirical-Bernstein confidence sequence"


def round_alpha(alpha: float, round_number: int) -> float:
    """The level of round `round_number` (from 1): ``alpha * 6 / (pi^2 round^2)``."""
    return alpha * 6 / (math.pi**2 * round_number**2)


class PairedTest:
    """A lower (and upper) confidence bound on the mean loss difference of one pair.

    Parameters
    ----------
    alpha
        The test's share of alpha: the probability that `lower` ever exceeds the true mean
        difference (and, separately, that `upper` ever falls below it). Below 1/2.
    started
        The trainer's event count before the test's first event.
    round
        The round it started in.
    pairs
        The pairs that started in that round (its Bonferroni divisor).

    """

    def __init__(self, alpha: float, *, started: int, round: int, pairs: int) -> None:
        self.alpha = alpha
        self.started = started
        self.round = round
        self.pairs = pairs
        self._cs = ConfidenceSequence(alpha=2 * alpha)

    def update(self, defender_loss: float, challenger_loss: float) -> None:
        """Add one event's bounded losses (each in [0, 1]) of the defender and the challenger."""
        self._cs.update((1.0 + defender_loss - challenger_loss) / 2)

    @property
    def n(self) -> int:
        """Events compared since the test started."""
        return self._cs.n

    @property
    def mean(self) -> float:
        """Mean loss difference (defender minus challenger) so far; 0 before any event."""
        mean = self._cs.mean
        return 0.0 if mean is None else 2 * mean - 1

    @property
    def lower(self) -> float:
        """Lower confidence bound on the mean difference, valid at every event at once."""
        return 2 * self._cs.lower - 1

    @property
    def upper(self) -> float:
        """Upper confidence bound on the mean difference, valid at every event at once."""
        return 2 * self._cs.upper - 1


class PairedTests:
    """The paired tests of one model, and the rounds that spent its alpha (module docstring).

    Parameters
    ----------
    alpha
        The model's level: the probability that any of its tests ever wrongly rejects.

    """

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.rounds = 0
        self._tests: dict[tuple[str, str], PairedTest] = {}

    def observe(
        self,
        defender: str,
        challenger_losses: Mapping[str, float],
        *,
        defender_loss: float,
        event: int,
    ) -> None:
        """Add one event's bounded losses of `defender` and of each challenger.

        Parameters
        ----------
        defender
            The defender's name; it is skipped among the challengers.
        challenger_losses
            Each challenger's loss on the event, by name.
        defender_loss
            The defender's loss on the event.
        event
            The trainer's event count, this event included.

        A pair seen for the first time starts its test, in one round with every other pair
        that starts on this event.
        """
        new = [
            name
            for name in challenger_losses
            if name != defender and (defender, name) not in self._tests
        ]
        if new:
            self.rounds += 1
            alpha = round_alpha(self.alpha, self.rounds) / len(new)
            for name in new:
                self._tests[defender, name] = PairedTest(
                    alpha, started=event - 1, round=self.rounds, pairs=len(new)
                )
        for name, loss in challenger_losses.items():
            if name != defender:
                self._tests[defender, name].update(defender_loss, loss)

    def of(self, defender: str) -> dict[str, PairedTest]:
        """The tests with `defender` as defender, by challenger."""
        return {
            challenger: test
            for (owner, challenger), test in self._tests.items()
            if owner == defender
        }

    def forget(self, name: str) -> None:
        """End every test `name` takes part in: its next event starts new ones."""
        self._tests = {pair: test for pair, test in self._tests.items() if name not in pair}

    def clear(self) -> None:
        """End every test (a new champion, or a drift of the champion): all start again."""
        self._tests.clear()
