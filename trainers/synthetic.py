"""Synthetic data streams with one concept drift, from river's generators (nothing downloaded).

`drift_stream` yields ``n`` events whose concept changes at event ``drift_at``:

* ``"sea"``: SEA concepts, label ``x0 + x1 > 8`` (variant 0) before, ``> 9.5`` (variant 3) after;
* ``"agrawal"``: Agrawal's loan function 0 before, function 2 after;
* ``"hyperplane"``: a random hyperplane before, an independent one after (10 features, no
  generator noise);
* ``"friedman"`` (regression): Friedman #1 before, ``y = 10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 +
  10 x3 + 5 x4 + N(0, 1)``; after, the global abrupt drift of Ikonomovska et al., which moves
  the features around (``10 sin(pi x3 x5) + 20 (x1 - 0.5)^2 + 10 x0 + 5 x2 + N(0, 1)``).

`TASK_OF_KIND` says which task each stream's labels fit.

With ``width == 1`` the switch is abrupt: the first ``drift_at`` events come from the old concept
and the rest from the new one (the two generators are chained here, because river 0.26.1's
`ConceptDriftStream` overflows for a width of 1). With ``width > 1`` the switch is gradual,
following river's `ConceptDriftStream` sigmoid centred on ``drift_at``. Labels are then flipped
with probability ``noise`` by a `random.Random` seeded from ``seed``. Feature names are strings
(``"x0"``, ``"x1"``, ... for generators that number their features). Same arguments, same
events.

Examples
--------
>>> from trainers.synthetic import drift_stream
>>> events = list(drift_stream("sea", n=4, drift_at=2, seed=7))
>>> len(events), sorted(events[0][0]), type(events[0][1]).__name__
(4, ['x0', 'x1', 'x2'], 'bool')
>>> events == list(drift_stream("sea", n=4, drift_at=2, seed=7))
True
>>> TASK_OF_KIND["friedman"], type(next(drift_stream("friedman", n=1, drift_at=0))[1]).__name__
('regression', 'float')

References
----------
[^1]: Street, W. N. and Kim, Y. (2001). A streaming ensemble algorithm (SEA) for large-scale
      classification. KDD'01, 377-382.
[^2]: Agrawal, R., Imielinski, T. and Swami, A. (1993). Database mining: a performance
      perspective. IEEE Transactions on Knowledge and Data Engineering, 5(6), 914-925.
[^3]: Hulten, G., Spencer, L. and Domingos, P. (2001). Mining time-changing data streams.
      KDD'01, 97-106.
[^4]: Friedman, J. H. (1991). Multivariate adaptive regression splines. The Annals of
      Statistics, 19(1), 1-67.
[^5]: Ikonomovska, E., Gama, J. and Džeroski, S. (2011). Learning model trees from evolving data
      streams. Data Mining and Knowledge Discovery, 23(1), 128-168.

"""

from __future__ import annotations

import itertools
import random
import sys
from collections.abc import Callable, Iterator
from typing import Any

from river.datasets import synth
from river.datasets.base import SyntheticDataset

__all__ = ["KINDS", "TASK_OF_KIND", "drift_stream"]

# kind -> (generator of the concept before the drift, of the one after), each from a seed.
_CONCEPTS: dict[
    str, tuple[Callable[[int], SyntheticDataset], Callable[[int], SyntheticDataset]]
] = {
    "sea": (
        lambda seed: synth.SEA(variant=0, seed=seed),
        lambda seed: synth.SEA(variant=3, seed=seed),
    ),
    "agrawal": (
        lambda seed: synth.Agrawal(classification_function=0, seed=seed),
        lambda seed: synth.Agrawal(classification_function=2, seed=seed),
    ),
    "hyperplane": (
        lambda seed: synth.Hyperplane(seed=seed, noise_percentage=0.0),
        lambda seed: synth.Hyperplane(seed=seed, noise_percentage=0.0),
    ),
    "friedman": (
        lambda seed: synth.Friedman(seed=seed),
        # Drifted from its first event to the end of any stream: the switch is the chaining's.
        lambda seed: synth.FriedmanDrift(drift_type="gra", position=(0, sys.maxsize), seed=seed),
    ),
}

KINDS = tuple(_CONCEPTS)

#: The task each stream's labels fit: booleans or classes, or real numbers.
TASK_OF_KIND = {
    "sea": "classification",
    "agrawal": "classification",
    "hyperplane": "classification",
    "friedman": "regression",
}


def drift_stream(
    kind: str,
    n: int,
    drift_at: int,
    width: int = 1,
    seed: int = 0,
    noise: float = 0.0,
) -> Iterator[tuple[dict[str, Any], Any]]:
    """Yield ``n`` ``(features, label)`` events with a concept drift at ``drift_at``.

    Parameters
    ----------
    kind
        One of `KINDS`: ``"sea"``, ``"agrawal"``, ``"hyperplane"`` or ``"friedman"``.
    n
        Number of events.
    drift_at
        Index of the first event of the new concept (abrupt), or centre of the change (gradual).
    width
        1 for an abrupt change, more for a gradual one over about that many events.
    seed
        Seeds the generators and the label noise.
    noise
        Probability of flipping each (binary) label: classification streams only (a regression
        stream's labels carry their generator's Gaussian noise).

    """
    if kind not in _CONCEPTS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if n < 0 or drift_at < 0 or width < 1 or not 0.0 <= noise <= 1.0:
        raise ValueError(
            f"need n, drift_at >= 0, width >= 1, 0 <= noise <= 1; got {n=}, "
            f"{drift_at=}, {width=}, {noise=}"
        )
    if noise and TASK_OF_KIND[kind] != "classification":
        raise ValueError(f"noise flips binary labels: {kind!r} is a regression stream")
    before, after = _CONCEPTS[kind]
    # Distinct seeds, so that the new concept (hyperplane) and its samples are independent.
    old, new = before(seed), after(seed + 1)
    if width == 1:
        events = itertools.chain(itertools.islice(old, drift_at), new)
    else:
        events = iter(
            synth.ConceptDriftStream(
                stream=old, drift_stream=new, position=drift_at, width=width, seed=seed
            )
        )
    flips = random.Random(seed)
    for x, y in itertools.islice(events, n):
        if noise and flips.random() < noise:
            y = not y if isinstance(y, bool) else 1 - y
        yield {k if isinstance(k, str) else f"x{k}": v for k, v in x.items()}, y
