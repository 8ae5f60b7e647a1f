"""bench/promotion_quality.py runs on small sizes (a smoke test: no figures, no timing)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

BENCH = Path(__file__).parents[3] / "bench" / "promotion_quality.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("promotion_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_rules_read_the_same_error_bits_and_the_old_one_errs_on_equal_learners():
    bench = load_bench()
    champion, challenger = bench.error_bits(0, 6000)
    assert champion.shape == challenger.shape == (6000,)
    assert 0 < np.mean(champion != challenger) < 0.1  # equally good, but not identical
    [(new, old), *_] = bench.false_promotion_run((0, 20_000))
    assert new == 0 and old > 0  # the pre-issue-12 rule promotes on noise within 20,000 events


def test_the_delay_run_reports_adwin_and_the_promotion_after_the_drift():
    adwin, promoted, early = load_bench().delay_run(("hyperplane", 0, 1500))
    assert adwin is not None and 0 < adwin < promoted and not early


def test_the_benefit_run_serves_a_version_and_counts_versions():
    accuracy, versions = load_bench().benefit_run((0, 500, True))
    assert 0.4 < accuracy <= 1 and versions >= 1
