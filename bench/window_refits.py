"""What a window refit costs the event loop: fitted inline at its due event, or in a thread pool.

    python bench/window_refits.py [EVENTS]

One `ModelTrainer` with a river champion and an ``sklearn_window`` gradient-boosting candidate
(window 2,000 events, refit every 3,000, result due 2,500 events later) learns the same SEA stream
three times: without the window candidate (the baseline), with its refits fitted inline at their
due event (what a worker without a pool would do), and with each refit submitted to a thread
pool as soon as it is cut and handed in before its due event (what the trainer worker does, see
`streams.workers.refits`). It prints events/s (and its ratio to the baseline measured in the
same run) and the events that stalled on a fit (over 50 ms) with their durations. Both fitting
modes install the same models (asserted), so the difference is only where the fit's time goes.
The first refit is due before the candidate predicts anything, when events are cheap: a pool
fit that takes longer than `refit_lag` events stalls the loop for the rest of it.
"""

from __future__ import annotations

import sys
import time
import warnings
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from trainers.candidates import RefitJob
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

# An event that takes longer than this stalled on a fit: predictions take ~2 ms at most.
STALL = 0.05
RIVER = {"name": "steady", "river": "StandardScaler | LogisticRegression"}
WINDOW = {
    "name": "window",
    "sklearn_window": "HistGradientBoostingClassifier",
    "params": {"max_iter": 50},
    "window_events": 2_000,
    "refit_every": 3_000,
    "refit_lag": 2_500,
}


def run(events: list, *, window: bool, pool: Executor | None) -> tuple[float, list[float], Any]:
    """Events/s, the durations of the events slower than `STALL` seconds, and the trainer."""
    candidates = [RIVER, WINDOW] if window else [RIVER]
    spec = ModelSpec.from_dict(
        "sea", {"task": "classification", "champion": "steady", "candidates": candidates}
    )
    trainer = ModelTrainer(spec)
    fits: dict[int, tuple[RefitJob, Future]] = {}
    stalls = []
    started = time.perf_counter()
    for position, (x, y) in enumerate(events):
        tick = time.perf_counter()
        if pool is not None:
            for job in trainer.refit_jobs(due_next=True):
                trainer.provide_refit(job, fits.pop(id(job))[1].result())
        trainer.learn(x, y, source="sea", position=position)
        if pool is not None:
            for job in trainer.refit_jobs():
                if id(job) not in fits:
                    fits[id(job)] = (job, pool.submit(job.fit))
        if (took := time.perf_counter() - tick) > STALL:
            stalls.append(took)
    return len(events) / (time.perf_counter() - started), stalls, trainer


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 12_000
    events = list(drift_stream("sea", n=n, drift_at=n // 2, seed=1))
    warnings.simplefilter("ignore")
    base_rate, base_stalls, _ = run(events, window=False, pool=None)
    inline_rate, inline_stalls, inline = run(events, window=True, pool=None)
    with ThreadPoolExecutor(max_workers=1) as threads:
        pool_rate, pool_stalls, pooled = run(events, window=True, pool=threads)
    assert pooled.snapshot() == inline.snapshot(), "both modes must install the same models"
    print(f"{n} SEA events; window candidate refitted {pooled.candidate('window').n_refits} times")
    print(f"| run | events/s | ratio | events over {STALL * 1e3:.0f} ms | their durations (ms) |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, rate, stalls in (
        ("river champion only (baseline)", base_rate, base_stalls),
        ("+ window candidate, refits inline", inline_rate, inline_stalls),
        ("+ window candidate, refits in a thread pool", pool_rate, pool_stalls),
    ):
        durations = ", ".join(f"{took * 1e3:.0f}" for took in stalls) or "-"
        print(f"| {name} | {rate:,.0f} | {rate / base_rate:.3f} | {len(stalls)} | {durations} |")


if __name__ == "__main__":
    main()
