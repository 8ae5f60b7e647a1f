"""streams.metrics without a worker: what each call exposes, and the discovery file."""

from __future__ import annotations

import json
from types import SimpleNamespace

from faust.types import TP
from prometheus_client import generate_latest

from streams.metrics import ScorerMetrics, TrainerMetrics, WorkerMetrics, register_target


def _sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def _report(version: int | None, champion: str = "steady") -> dict:
    scores = {"n": 10, "missing": 0, "accuracy": 0.9, "f1": None, "log_loss": float("nan")}
    return {
        "model": "sea",
        "version": version,
        "champion": champion,
        "quarantined": {"agile": "it raised"},
        "candidates": {
            name: {"n": 10, "rolling": scores, "cumulative": scores} for name in ("steady", "agile")
        },
    }


def test_known_label_sets_start_at_zero() -> None:
    metrics = TrainerMetrics()
    metrics.expect(["sea"])
    assert _sample(metrics, "driftline_dead_letters_total", reason="not_json") == 0
    assert _sample(metrics, "driftline_promotions_total", model="sea", kind="challenger") == 0
    assert _sample(metrics, "driftline_events_skipped_total", reason="duplicate_join") == 0


def test_a_report_becomes_candidate_metrics_and_the_champion() -> None:
    metrics = TrainerMetrics()
    metrics.report(_report(None))
    assert _sample(metrics, "driftline_champion_version", model="sea", candidate="steady") is None
    metrics.report(_report(2, champion="agile"))
    labels = {"model": "sea", "candidate": "steady", "metric": "accuracy"}
    assert _sample(metrics, "driftline_candidate_rolling_metric", **labels) == 0.9
    # Counts, missing values and NaN are not levels.
    text = generate_latest(metrics.registry).decode()
    assert 'metric="n"' not in text and 'metric="f1"' not in text and "log_loss" not in text
    assert _sample(metrics, "driftline_champion_version", model="sea", candidate="agile") == 2
    # The series of the former champion's label set is gone, not left at its last value.
    assert _sample(metrics, "driftline_champion_version", model="sea", candidate="steady") is None
    assert _sample(metrics, "driftline_candidate_quarantined", model="sea", candidate="agile") == 1


def test_the_scorer_exposes_predictions_serving_and_the_join() -> None:
    metrics = ScorerMetrics()
    for _ in range(3):
        metrics.predicted("sea", 2, "stable")
    metrics.watch_serving(lambda: [("sea", "stable", 2), ("sea", "canary", 3)])
    live = {
        "model": "sea",
        "version": 2,
        "arm": "stable",
        "joined": 5,
        "metrics": {"rolling": {"accuracy": 0.8}, "cumulative": {"accuracy": 0.75}},
        "expired": 1,
        "unmatched": 4,
    }
    metrics.live([live], pending=7)
    assert _sample(metrics, "driftline_predictions_total", model="sea", version="2", arm="stable")
    assert _sample(metrics, "driftline_serving_version", model="sea", arm="canary") == 3
    labels = {"model": "sea", "version": "2", "arm": "stable", "metric": "accuracy"}
    assert _sample(metrics, "driftline_live_rolling_metric", **labels) == 0.8
    assert _sample(metrics, "driftline_join_unmatched_total", model="sea") == 4
    assert _sample(metrics, "driftline_join_pending") == 7


def test_consumer_lag_comes_from_fausts_monitor() -> None:
    metrics = WorkerMetrics("trainer")
    tp = TP("t", 0)
    monitor = SimpleNamespace(tp_end_offsets={tp: 100}, tp_committed_offsets={tp: 40})
    app = SimpleNamespace(monitor=monitor, sensors=SimpleNamespace(add=lambda sensor: None))
    metrics.watch_consumer(app)  # type: ignore[arg-type]
    assert _sample(metrics, "driftline_consumer_lag", topic="t", partition="0") == 60


def test_register_target_writes_a_discovery_file(tmp_path) -> None:
    path = register_target(tmp_path, job="driftline-trainer", port=1234, labels={"group": "g"})
    assert path.name.startswith("driftline-trainer-") and path.suffix == ".json"
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:1234"], "labels": {"job": "driftline-trainer", "group": "g"}}
    ]
