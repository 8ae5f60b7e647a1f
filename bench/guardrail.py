"""Seeded simulation of the canary guardrail and the stable monitor alone (no Kafka, no worker).

    .venv/bin/python bench/guardrail.py [--runs 1000]

Every run draws its own outcomes from ``numpy.random.default_rng(run)``: each outcome goes to the
canary with probability ``--canary`` (0.1), and is right with the arm's accuracy. The guardrail
(`trainers.guardrail`, alpha 0.05) is looked at after every outcome. The confidence sequences
are computed for whole runs at once with `trainers.guardrail.confidence_sequence`; a few runs are
also replayed outcome by outcome through `CanaryGuardrail` and must decide at the same outcome.

Printed, as markdown tables:

(a) an equally good canary (0.85 vs 0.85) watched for 20,000 outcomes: how often it is ever
    rolled back by the guardrail, and by the naive baseline, a one-sided two-proportion z-test at
    level alpha repeated after every outcome (from 30 outcomes per arm), and the same z-test run
    once at 20,000 outcomes, which is valid;
(b) a canary 5 points worse (0.80 vs 0.85): outcomes (both arms) until rollback, up to 200,000;
(c) an equally good canary: outcomes until rollout with tolerance 0.02 and 1,000 outcomes per
    arm, up to 1,000,000 (fewer runs: it is the long one);
(d) the stable monitor (reference accuracy 0.85 given, tolerance 0.02): false alerts over
    20,000 outcomes at 0.85, and the delay to alert when accuracy drops to 0.80 after 5,000.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from trainers.guardrail import CanaryGuardrail, StableMonitor, confidence_sequence

ALPHA = 0.05
TOLERANCE = 0.02
MIN_OUTCOMES = 1000
NAIVE_MIN = 30


def draw(run: int, horizon: int, canary: float, acc_canary: float, acc_stable: float):
    """Arm of every outcome and each arm's own stream of losses (error bits) for one run."""
    rng = np.random.default_rng(run)
    is_canary = rng.random(horizon) < canary
    canary_losses = (rng.random(horizon) >= acc_canary).astype(np.float64)
    stable_losses = (rng.random(horizon) >= acc_stable).astype(np.float64)
    return is_canary, canary_losses, stable_losses


def at_counts(path: np.ndarray, counts: np.ndarray, before: float) -> np.ndarray:
    """Value of each row's per-arm path after `counts` outcomes of that arm (`before` at 0)."""
    padded = np.concatenate([np.full((path.shape[0], 1), before), path], axis=1)
    return np.take_along_axis(padded, counts, axis=1)


def first(mask: np.ndarray) -> np.ndarray:
    """1-based index of the first True of each row, or 0 when there is none."""
    hit = mask.any(axis=1)
    return np.where(hit, mask.argmax(axis=1) + 1, 0)


def simulate(runs, horizon, canary, acc_canary, acc_stable, *, naive=False, chunk=50):
    """Outcome (1-based, both arms) of the guardrail's rollback and rollout per run (0: never)."""
    rollback, rollout, naive_any, naive_end = [], [], [], []
    z = stats.norm.ppf(1 - ALPHA)
    for start in range(0, runs, chunk):
        rows = [
            draw(r, horizon, canary, acc_canary, acc_stable)
            for r in range(start, min(start + chunk, runs))
        ]
        is_canary = np.stack([row[0] for row in rows])
        n_canary = np.cumsum(is_canary, axis=1)
        n_stable = np.arange(1, horizon + 1) - n_canary
        # alpha / 2 per arm, as CanaryGuardrail does.
        lo_c, hi_c = confidence_sequence(np.stack([row[1] for row in rows]), ALPHA / 2)
        lo_s, hi_s = confidence_sequence(np.stack([row[2] for row in rows]), ALPHA / 2)
        lower = at_counts(lo_c, n_canary, 0.0) - at_counts(hi_s, n_stable, 1.0)
        upper = at_counts(hi_c, n_canary, 1.0) - at_counts(lo_s, n_stable, 0.0)
        del lo_c, hi_c, lo_s, hi_s
        rollback.append(first(lower > 0))
        enough = np.minimum(n_canary, n_stable) >= MIN_OUTCOMES
        rollout.append(first(enough & (upper <= TOLERANCE)))
        if naive:
            errors_c = at_counts(np.cumsum(np.stack([row[1] for row in rows]), axis=1), n_canary, 0)
            errors_s = at_counts(np.cumsum(np.stack([row[2] for row in rows]), axis=1), n_stable, 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                nc, ns = np.maximum(n_canary, 1), np.maximum(n_stable, 1)
                pooled = (errors_c + errors_s) / (nc + ns)
                se = np.sqrt(pooled * (1 - pooled) * (1 / nc + 1 / ns))
                score = (errors_c / nc - errors_s / ns) / se
            valid = (n_canary >= NAIVE_MIN) & (n_stable >= NAIVE_MIN) & (se > 0)
            naive_any.append((valid & (score > z)).any(axis=1))
            naive_end.append(valid[:, -1] & (score[:, -1] > z))
    result = {"rollback": np.concatenate(rollback), "rollout": np.concatenate(rollout)}
    if naive:
        result["naive_any"] = np.concatenate(naive_any)
        result["naive_end"] = np.concatenate(naive_end)
    return result


def replay(run, horizon, canary, acc_canary, acc_stable) -> tuple[str, int]:
    """The same run outcome by outcome through CanaryGuardrail: first final decision and when."""
    is_canary, canary_losses, stable_losses = draw(run, horizon, canary, acc_canary, acc_stable)
    guard = CanaryGuardrail(
        "classification", alpha=ALPHA, tolerance=TOLERANCE, min_outcomes=MIN_OUTCOMES
    )
    used = {"canary": 0, "stable": 0}
    for t, arm_is_canary in enumerate(is_canary, start=1):
        arm = "canary" if arm_is_canary else "stable"
        losses = canary_losses if arm_is_canary else stable_losses
        guard.update_loss(arm, float(losses[used[arm]]))
        used[arm] += 1
        kind = guard.decide().kind
        if kind != "continue":
            return kind, t
    return "continue", 0


def monitor_paths(runs, horizon, change, acc_before, acc_after, reference) -> np.ndarray:
    """Outcome of the stable monitor's alert per run (0: never), vectorised over runs."""
    level = (1 - reference) + TOLERANCE
    bets = np.array([2.0**-k / level for k in range(1, 11)])
    losses = np.stack(
        [
            (
                np.random.default_rng(10_000 + r).random(horizon)
                >= np.where(np.arange(horizon) < change, acc_before, acc_after)
            ).astype(np.float64)
            for r in range(runs)
        ]
    )
    wealth = np.zeros((runs, bets.size))
    alert = np.zeros(runs, dtype=np.int64)
    for t in range(1, horizon + 1):
        wealth = (wealth + 1.0 / (t * (t + 1))) * (1.0 + bets * (losses[:, t - 1 : t] - level))
        newly = (alert == 0) & (wealth.mean(axis=1) >= 1 / ALPHA)
        alert[newly] = t
    return alert


def check_monitor(runs_checked: int, horizon: int, change: int, alerts: np.ndarray) -> None:
    """Replays a few monitor runs through StableMonitor itself."""
    for r in range(runs_checked):
        accuracy = np.where(np.arange(horizon) < change, 0.85, 0.80)
        losses = np.random.default_rng(10_000 + r).random(horizon) >= accuracy
        monitor = StableMonitor("classification", reference=0.85, tolerance=TOLERANCE, alpha=ALPHA)
        when = 0
        for t, loss in enumerate(losses, start=1):
            monitor.update_loss(float(loss))
            if monitor.decide().kind == "alert":
                when = t
                break
        assert when == alerts[r], (r, when, alerts[r])


def median_of(times: np.ndarray) -> str:
    hit = times[times > 0]
    return f"{int(np.median(hit)):,}" if hit.size * 2 > times.size else "n/a (< half decided)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--canary", type=float, default=0.1)
    args = parser.parse_args()
    runs, canary = args.runs, args.canary
    began = time.perf_counter()

    # Same decision at the same outcome, run by run, as the streaming class.
    for acc_canary in (0.80, 0.85):
        times = simulate(3, 60_000, canary, acc_canary, 0.85)
        for run in range(3):
            decided = {k: int(times[k][run]) for k in ("rollback", "rollout") if times[k][run]}
            # Rollback is checked first, as in CanaryGuardrail.decide.
            expected = min(
                decided.items(),
                key=lambda kv: (kv[1], kv[0] != "rollback"),
                default=("continue", 0),
            )
            assert replay(run, 60_000, canary, acc_canary, 0.85) == expected, (run, expected)

    equal = simulate(runs, 20_000, canary, 0.85, 0.85, naive=True)
    worse = simulate(runs, 200_000, canary, 0.80, 0.85, chunk=10)
    rollout_runs = max(runs // 10, 1)
    slow = simulate(rollout_runs, 1_000_000, canary, 0.85, 0.85, chunk=2)
    alerts_null = monitor_paths(runs, 20_000, 20_000, 0.85, 0.85, 0.85)
    alerts_drop = monitor_paths(runs, 20_000, 5_000, 0.85, 0.80, 0.85)
    check_monitor(3, 20_000, 5_000, alerts_drop)

    def share(flags: np.ndarray) -> str:
        k, n = int(np.count_nonzero(flags)), flags.size
        low, high = stats.binomtest(k, n).proportion_ci(0.95)
        return f"{k}/{n} = {k / n:.3f} [{low:.3f}, {high:.3f}]"

    print(
        f"canary fraction {canary}, alpha {ALPHA}, tolerance {TOLERANCE}, "
        f"min_outcomes {MIN_OUTCOMES} per arm;"
    )
    print("looked at after every outcome; [95% Clopper-Pearson interval]\n")
    print("(a) equally good canary (accuracy 0.85 vs 0.85), 20,000 outcomes per run\n")
    print("| test | runs with a (false) rollback |")
    print("| --- | ---: |")
    print(
        f"| guardrail: empirical-Bernstein confidence sequences | {share(equal['rollback'] > 0)} |"
    )
    print(f"| naive z-test repeated after every outcome | {share(equal['naive_any'])} |")
    print(
        "| z-test once, at 20,000 outcomes (valid, but blind until then) "
        f"| {share(equal['naive_end'])} |"
    )
    print()
    print("(b)-(c) outcomes (both arms) until the guardrail decides\n")
    print("| case | decided within horizon | median outcomes | quartiles |")
    print("| --- | ---: | ---: | ---: |")
    for label, times, horizon in [
        ("(b) canary 5 points worse (0.80 vs 0.85): rollback", worse["rollback"], 200_000),
        (f"(c) equally good canary: rollout ({rollout_runs} runs)", slow["rollout"], 1_000_000),
    ]:
        hit = times[times > 0]
        quartiles = (
            ", ".join(f"{int(q):,}" for q in np.percentile(hit, [25, 75])) if hit.size else "-"
        )
        print(
            f"| {label} | {hit.size}/{times.size} (≤ {horizon:,}) "
            f"| {median_of(times)} | {quartiles} |"
        )
    print(
        "| (c) equally good canary: false rollback within 1,000,000 "
        f"| {int(np.count_nonzero(slow['rollback']))}/{rollout_runs} | | |"
    )
    print()
    print("(d) stable monitor, reference accuracy 0.85 given, tolerance 0.02, 20,000 outcomes\n")
    print("| case | result |")
    print("| --- | ---: |")
    print(f"| accuracy stays 0.85: runs with a (false) alert | {share(alerts_null > 0)} |")
    delays = alerts_drop[alerts_drop > 5_000] - 5_000
    early = int(np.count_nonzero((alerts_drop > 0) & (alerts_drop <= 5_000)))
    print(
        "| accuracy 0.80 from outcome 5,000: alerted after the drop "
        f"| {delays.size}/{runs} ({early} before it) |"
    )
    if delays.size:
        print(f"| ... median outcomes from the drop to the alert | {int(np.median(delays)):,} |")
    print(f"\n{runs} runs; {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
