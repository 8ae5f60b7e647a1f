"""How good the promotions are: false promotions, delay after a drift, and what drift actions buy.

    .venv/bin/python bench/promotion_quality.py [--quick] [--processes 2]

Prints three markdown tables. Every number comes from seeded runs, so a rerun prints the same.

(a) **False promotions.** Stationary SEA events (variant 0, 10% label noise), 500,000 per run,
    20 runs. The champion and the challenger are the same river pipeline (``StandardScaler |
    LogisticRegression``) whose initial weights are drawn with different seeds: equally good, but
    not identical (they disagree on about 1.5% of the events). Their per-event error bits are
    computed once per run; both rules then read exactly those bits, the ones the trainer feeds
    its policy for ``metric = "accuracy"``. The new rule is the real thing:
    `trainers.sequential.PairedTests` updated on every event and `PromotionPolicy.decide` at every
    policy evaluation, with `PrequentialScore` s. The old rule (driftline before issue 12) is
    reimplemented below with `trainers.significance.mcnemar`: at every evaluation, on the last
    ``max(window, min_samples)`` events, the challenger wins when its accuracy is better by
    ``margin`` and McNemar's p-value is below ``alpha``. Printed: the share of runs in which the
    challenger is ever promoted, for two settings (the defaults, and ``margin = 0`` at
    ``alpha = 0.05``); it must be at most ``alpha`` for the new rule.
(b) **Delay.** Abrupt drift on river's SEA, Agrawal and Hyperplane (`trainers.synthetic`),
    10,000 events before and after, 10 runs each, real `ModelTrainer` s: a champion that is good
    before the drift but slow to follow it and a challenger that is better after it (SEA and
    Hyperplane: logistic regression vs passive-aggressive; Agrawal: Hoeffding tree vs Hoeffding
    adaptive tree), ADWIN watching the champion (``[models.X.drift]``, no actions). Printed: the
    median delay from the drift to ADWIN's detection and to the challenger's promotion, and their
    ratio (the goal: at most 2); runs whose challenger won before the drift are counted apart and
    left out of the medians. The policy is evaluated every 50 events (an anytime-valid test
    may be read as often as one likes), needs 100 paired events (``min_samples``), and keeps its
    default margin (0.01) and alpha (0.01).
(c) **Benefit.** Agrawal with three concept switches (loan functions 0, 2, 4, 6 in turn, 10,000
    events each), 5 runs: prequential accuracy of what serves (the frozen copy of the last
    version, tested before every event, as the scorers would serve it), with the drift actions
    ``reset`` and ``refit`` on and off (ADWIN on the champion in both). The model: a river
    Hoeffding tree (the first champion, which never forgets an old concept) and a scikit-learn
    decision tree refitted on its last 2,000 events every 1,000 events (``sklearn_window``);
    ``reset`` adds a fresh Hoeffding tree at each detection, ``refit`` refits the window tree at
    once.

``--quick`` runs every section on a few small runs (a smoke test, not figures); ``--sections b``
prints table (b) only (any of ``a``, ``b``, ``c``).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable, Iterable
from multiprocessing import Pool
from typing import Any

import numpy as np
from river import linear_model, preprocessing
from river.datasets import synth

from trainers.metrics import PrequentialScore
from trainers.policy import PromotionPolicy
from trainers.sequential import PairedTests
from trainers.significance import mcnemar
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

# The policy settings of (a): the defaults, then a pure significance test at a laxer level.
SETTINGS = (
    {"alpha": 0.01, "margin": 0.01},
    {"alpha": 0.05, "margin": 0.0},
)
# The old rule read its window from the scores, whose history reached back this far.
WINDOW = 1000
DELAY_POLICY = {"warmup": 500, "every": 50, "min_samples": 100, "cooldown": 0}
LOGISTIC = {
    "river": "StandardScaler | LogisticRegression",
    "params": {"LogisticRegression": {"optimizer": {"SGD": 0.01}}},
}
PASSIVE_AGGRESSIVE = {"river": "StandardScaler | linear_model.PAClassifier"}
# The loan functions of the benefit's stream, in turn.
SWITCHES = (0, 2, 4, 6)
# kind -> (champion, challenger): good before the drift / better after it.
PAIRS = {
    "sea": (LOGISTIC, PASSIVE_AGGRESSIVE),
    "agrawal": (
        {"river": "tree.HoeffdingTreeClassifier"},
        {"river": "tree.HoeffdingAdaptiveTreeClassifier", "params": {"seed": 1}},
    ),
    "hyperplane": (LOGISTIC, PASSIVE_AGGRESSIVE),
}


def error_bits(seed: int, events: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-event error bits of two equally good learners on one stationary SEA stream.

    Both are the same logistic regression, each learning every event a Poisson(1) number of
    times drawn from its own seed: online bagging's resampling (Oza & Russell 2001), which keeps
    the two apart for ever while neither is better in expectation.
    """
    learners = [
        preprocessing.StandardScaler() | linear_model.LogisticRegression() for _ in range(2)
    ]
    repeats = [np.random.default_rng([seed, member]).poisson(1.0, events) for member in range(2)]
    errors = np.zeros((2, events), dtype=np.int64)
    stream = synth.SEA(variant=0, seed=seed, noise=0.1)
    for i, (x, y) in enumerate(itertools.islice(stream, events)):
        for member, learner in enumerate(learners):
            errors[member, i] = learner.predict_one(x) != y
            for _ in range(repeats[member][i]):
                learner.learn_one(x, y)
    return errors[0], errors[1]


def policy_of(settings: dict[str, float]) -> PromotionPolicy:
    return PromotionPolicy(**settings)


def new_rule(champion: np.ndarray, challenger: np.ndarray, policy: PromotionPolicy) -> int:
    """Event of the challenger's first promotion under the anytime-valid policy (0: never)."""
    history = max(WINDOW, policy.min_samples)
    scores = {
        name: PrequentialScore("classification", WINDOW, history) for name in ("champ", "chal")
    }
    tests = PairedTests(policy.alpha)
    for event, (a, b) in enumerate(zip(champion.tolist(), challenger.tolist(), strict=True), 1):
        # Labels True, predictions right or wrong: the scores see exactly these error bits.
        scores["champ"].update(True, not a)
        scores["chal"].update(True, not b)
        if event <= policy.warmup:
            continue  # the trainer compares with the champion once there is one
        tests.observe("champ", {"chal": float(b)}, defender_loss=float(a), event=event)
        if policy.due(event):
            decision = policy.decide(
                events=event,
                champion="champ",
                since_promotion=event - policy.warmup,
                scores=scores,
                tests=tests.of("champ"),
            )
            if decision is not None:
                return event
    return 0


def old_rule(champion: np.ndarray, challenger: np.ndarray, policy: PromotionPolicy) -> int:
    """Event of the challenger's first promotion under the pre-issue-12 rule (0: never)."""
    n = max(WINDOW, policy.min_samples)
    for event in range(policy.warmup + policy.every, len(champion) + 1, policy.every):
        if event - policy.warmup < policy.cooldown or event < n:
            continue
        window = slice(event - n, event)
        better_by = (champion[window].sum() - challenger[window].sum()) / n
        if better_by < policy.margin - 1e-12:
            continue
        if mcnemar(champion[window], challenger[window]).p_value < policy.alpha:
            return event
    return 0


def false_promotion_run(args: tuple[int, int]) -> list[tuple[int, int]]:
    """(new rule, old rule) first false promotions of one seed, for every setting."""
    seed, events = args
    champion, challenger = error_bits(seed, events)
    return [
        (new_rule(champion, challenger, policy), old_rule(champion, challenger, policy))
        for policy in map(policy_of, SETTINGS)
    ]


def delay_run(args: tuple[str, int, int]) -> tuple[int | None, int | None, bool]:
    """(ADWIN's delay, the promotion's delay, promoted before the drift) of one run; a run whose
    challenger won before the drift measures no delay."""
    kind, seed, drift_at = args
    champion, challenger = PAIRS[kind]
    spec = ModelSpec.from_dict(
        kind,
        {
            "task": "classification",
            "champion": "steady",
            "candidates": [{"name": "steady", **champion}, {"name": "agile", **challenger}],
            "policy": DELAY_POLICY,
            "drift": {"detector": "ADWIN"},
        },
    )
    trainer = ModelTrainer(spec)
    promoted = None
    for position, (x, y) in enumerate(drift_stream(kind, 2 * drift_at, drift_at, seed=seed)):
        promotion = trainer.learn(x, y, source=kind, position=position)
        if promotion is not None and promotion.kind == "challenger":
            if trainer.events <= drift_at:
                return None, None, True
            promoted = trainer.events - drift_at
            break
    detected = [
        d.event - drift_at
        for d in trainer.take_detections()
        if d.event > drift_at and d.candidate == "steady"
    ]
    return (detected[0] if detected else None), promoted, False


def switching_stream(seed: int, per_concept: int) -> Iterable[tuple[dict, int]]:
    """Agrawal's loan functions 0, 2, 4, 6 in turn, `per_concept` events each: three abrupt
    switches."""
    return itertools.chain.from_iterable(
        itertools.islice(
            synth.Agrawal(classification_function=function, seed=seed + function), per_concept
        )
        for function in SWITCHES
    )


def benefit_run(args: tuple[int, int, bool]) -> tuple[float, int]:
    """Prequential accuracy of what serves over a three-switch stream, actions on or off, and
    the number of versions issued."""
    seed, per_concept, actions = args
    table: dict[str, Any] = {
        "task": "classification",
        "champion": "tree",
        "candidates": [
            {"name": "tree", "river": "tree.HoeffdingTreeClassifier"},
            {
                "name": "window",
                "sklearn_window": "DecisionTreeClassifier",
                "params": {"max_depth": 8},
                "window_events": 2000,
                "refit_every": 1000,
            },
        ],
        "policy": {"warmup": 500, "every": 100, "min_samples": 200, "cooldown": 500},
        "drift": {"detector": "ADWIN"},
    }
    if actions:
        table["drift"].update(
            actions=["reset", "refit"], reset="tree", min_events_between_actions=1000
        )
    trainer = ModelTrainer(ModelSpec.from_dict("agrawal", table))
    right = served = 0
    for position, (x, y) in enumerate(switching_stream(seed, per_concept)):
        copy = trainer.served_copy
        if copy is not None:
            served += 1
            right += copy.predict_one(x) == y
        trainer.learn(x, y, source="agrawal", position=position)
    return right / served, trainer.latest_version


def run_all(
    pool: Any, function: Callable[[Any], Any], arguments: list[Any]
) -> tuple[list[Any], float]:
    started = time.perf_counter()
    results = pool.map(function, arguments)
    return results, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny runs: a smoke test")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--sections", default="abc", help="which tables to print, e.g. 'b' (default: abc)"
    )
    options = parser.parse_args()
    quick = options.quick
    events, runs = (20_000, 2) if quick else (500_000, 20)
    drift_at, delay_runs = (2_000, 2) if quick else (10_000, 10)
    per_concept, benefit_runs = (1_500, 1) if quick else (10_000, 5)

    with Pool(options.processes) as pool:
        if "a" in options.sections:
            false_promotions(pool, runs, events)
        if "b" in options.sections:
            delays(pool, delay_runs, drift_at)
        if "c" in options.sections:
            benefit(pool, benefit_runs, per_concept)


def false_promotions(pool: Any, runs: int, events: int) -> None:
    """Print table (a)."""
    results, seconds = run_all(pool, false_promotion_run, [(seed, events) for seed in range(runs)])
    print(f"\n(a) False promotions: {runs} runs of {events:,} stationary events")
    print(f"({seconds:.0f} s)\n")
    print("| alpha | margin | new rule: runs promoting | old rule: runs promoting |")
    print("|---|---|---|---|")
    for index, settings in enumerate(SETTINGS):
        new = sum(1 for run in results if run[index][0])
        old = sum(1 for run in results if run[index][1])
        print(
            f"| {settings['alpha']} | {settings['margin']} | {new}/{runs} = {new / runs:.2f} "
            f"| {old}/{runs} = {old / runs:.2f} |"
        )


def delays(pool: Any, delay_runs: int, drift_at: int) -> None:
    """Print table (b)."""
    arguments = [(kind, seed, drift_at) for kind in PAIRS for seed in range(delay_runs)]
    outcomes, seconds = run_all(pool, delay_run, arguments)
    print(f"\n(b) Delay after an abrupt drift at event {drift_at:,}, {delay_runs} runs each")
    print(f"({seconds:.0f} s)\n")
    print(
        "| stream | ADWIN: median delay | promotion: median delay | ratio "
        "| runs promoted | promoted before the drift |"
    )
    print("|---|---|---|---|---|---|")
    for kind in PAIRS:
        rows = [out for args, out in zip(arguments, outcomes, strict=True) if args[0] == kind]
        detected = [d for d, _, _ in rows if d is not None]
        promoted = [p for _, p, _ in rows if p is not None]
        early = sum(1 for _, _, e in rows if e)
        adwin = statistics.median(detected) if detected else None
        promotion = statistics.median(promoted) if promoted else None
        ratio = f"{promotion / adwin:.1f}" if adwin and promotion else "-"
        print(
            f"| {kind} | {adwin if adwin is not None else '-'} | "
            f"{promotion if promotion is not None else '-'} | {ratio} | "
            f"{len(promoted)}/{len(rows)} | {early} |"
        )


def benefit(pool: Any, benefit_runs: int, per_concept: int) -> None:
    """Print table (c)."""
    print(f"\n(c) Benefit: Agrawal with three concept switches, {per_concept:,} events each")
    arguments = [(seed, per_concept, on) for on in (False, True) for seed in range(benefit_runs)]
    results, seconds = run_all(pool, benefit_run, arguments)
    print(f"({seconds:.0f} s)\n")
    print(f"| drift actions | accuracy of what serves (mean of {benefit_runs}) | versions |")
    print("|---|---|---|")
    for on in (False, True):
        rows = [result for args, result in zip(arguments, results, strict=True) if args[2] == on]
        accuracy = statistics.mean(accuracy for accuracy, _ in rows)
        versions = statistics.mean(versions for _, versions in rows)
        print(f"| {'reset + refit' if on else 'off'} | {accuracy:.4f} | {versions:.1f} |")


if __name__ == "__main__":
    main()
