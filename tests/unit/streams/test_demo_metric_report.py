"""The demo's report and live view in the model's primary metric, with drift and action notices.

A regression model is reported in MAE (no "accuracy" anywhere), and the trainer's drift and
action notices are listed apart from the versions, without changing what served nor ending a
trial.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from streams.cli.demo import DemoError, DemoOptions, Observation, build_summary
from streams.cli.demo.delayed import trial_end
from streams.cli.demo.live import LiveState, live_view
from streams.cli.demo.report import (
    changes_serving,
    plot_name,
    plot_rolling_metric,
    record_event,
    summary_markdown,
    trial_results,
)
from streams.contract import event_position
from streams.registry.records import ArtifactRef, ModelVersion
from trainers.actions import Notice

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def report(events: int, linear: float, tree: float, *, champion: str) -> dict[str, Any]:
    def scores(mae: float) -> dict[str, Any]:
        return {
            "n": events,
            "rolling": {"n": min(events, 1000), "missing": 0, "mae": mae, "rmse": mae * 1.3},
            "cumulative": {"n": events, "missing": 0, "mae": mae + 0.1, "rmse": mae * 1.4},
        }

    return {
        "model": "friedman",
        "events": events,
        "champion": champion,
        "version": 1 if champion == "linear" else 2,
        "candidates": {"linear": scores(linear), "tree": scores(tree)},
        "offset": events - 1,
    }


def version(number: int, candidate: str, kind: str, last_offset: int) -> ModelVersion:
    return ModelVersion(
        model="friedman",
        version=number,
        kind=kind,
        candidate={"name": candidate, "params": {}},
        previous_version=number - 1 or None,
        reason=f"{candidate} won",
        evidence={
            "window": [last_offset - 998, last_offset + 1],
            **({"lower": 0.0132, "threshold": 0.01, "alpha_spent": 0.000122} if number > 1 else {}),
        },
        lineage={"last_offset": event_position(last_offset, None), "events": last_offset + 1},
        artifact=ArtifactRef(key="k", sha256="0" * 64, size=1, signature="s"),
    )


def notice(sequence: int, kind: str, candidate: str, offset: int, **evidence: Any) -> ModelVersion:
    lineage = {"source": "t[0]", "position": event_position(offset, None), "event": offset + 1}
    reason = " ".join(word for word in (kind, evidence.get("action"), candidate) if word)
    return ModelVersion.from_notice(
        Notice("friedman", sequence, kind, candidate, reason, evidence, lineage), version=2
    )


DRIFT = notice(1, "drift", "tree", 2029, detector="ADWIN")
RESET = notice(2, "action", "tree@reset1", 2029, action="reset", cause=1, suppressed=False)
SUPPRESSED = notice(3, "action", "tree", 2500, action="reset", cause=1, suppressed=True)


@pytest.fixture
def observation() -> Observation:
    return Observation(
        metrics=(
            report(1000, 2.2, 2.4, champion="linear"),
            report(2000, 2.1, 1.8, champion="tree"),
            report(3000, 2.2, 2.6, champion="tree"),
        ),
        versions=(
            version(1, "linear", "initial", 999),
            version(2, "tree", "challenger", 1499),
            DRIFT,
            RESET,
            SUPPRESSED,
        ),
        published_at=(110.0, 115.0, 120.0, 120.0, 125.0),
        predictions_by_version={1: 1500, 2: 1500},
        scored=3000,
    )


def summarise(observation: Observation):
    return build_summary(
        observation,
        model="friedman",
        metric="mae",
        stream="friedman",
        options=DemoOptions(events=3000, drift_at=2000, rate=1000, seed=7),
        produced_at={f"e-{n}": 100.0 + n / 100 for n in range(3000)},
        scored_ids=frozenset(f"e-{n}" for n in range(3000)),
        startup_seconds=1.0,
        pipeline_seconds=2.0,
        total_seconds=3.0,
    )


def test_notices_are_apart_from_the_versions_and_change_nothing_served(observation) -> None:
    summary = summarise(observation)
    assert [r.version for r in summary.versions] == [1, 2]
    assert [r.notice_sequence for r in summary.notices] == [1, 2, 3]
    assert not any(changes_serving(r) for r in summary.notices)
    # Events produced after the notices still count under v2, the version they left serving.
    assert summary.served_when_produced == {None: 1000, 1: 500, 2: 1500}
    assert [record_event(r) for r in (DRIFT, RESET, SUPPRESSED)] == [2030, 2030, 2501]


def test_a_regression_report_is_in_mae_throughout(observation) -> None:
    text = summary_markdown(summarise(observation))
    assert "accuracy" not in text.lower()
    assert "![Rolling mae of each candidate](rolling_mae.png)" in text
    assert "| candidate | rolling mae | cumulative mae | events learned |" in text
    assert "| tree (champion) | 2.6000 | 2.7000 | 3,000 |" in text
    assert plot_name("mae") == "rolling_mae.png"


def test_the_report_lists_each_drift_and_action_with_its_reason(observation) -> None:
    text = summary_markdown(summarise(observation))
    notices = text.split("## Drift, actions and alerts", 1)[1].split("\n## ", 1)[0]
    assert "| notice | kind | at event | candidate | reason |" in notices
    assert "| #1 | drift | 2,030 | tree | drift tree |" in notices
    assert "| #2 | action | 2,030 | tree@reset1 | action reset tree@reset1 |" in notices
    assert "| #3 | action | 2,501 | tree | action reset tree |" in notices
    versions = text.split("## Versions published", 1)[1].split("\n## ", 1)[0]
    assert "drift" not in versions
    assert (
        "| v2 | tree | challenger | 1,500 | 501-1,500 | lower bound 0.0132 > 0.01 at alpha "
        "0.000122 |"
    ) in versions


def test_the_live_view_shows_the_metric_and_every_record(observation) -> None:
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(live_view(LiveState(events=3000, metric="mae", phase="streaming"), observation))
    text = console.export_text()
    assert "rolling mae 2.6000" in text and "accuracy" not in text
    rows = [line for line in text.splitlines() if "│ drift" in line or "│ action" in line]
    assert len(rows) == 3, text
    assert all(row.lstrip("│ ").startswith("-") for row in rows)  # a notice is not a version


def test_the_plot_of_a_regression_model_with_notices_is_a_png(observation, tmp_path) -> None:
    path = plot_rolling_metric(
        observation.metrics,
        observation.versions,
        metric="mae",
        drift_at=2000,
        path=tmp_path / plot_name("mae"),
    )
    data = Path(path).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_the_model_task_picks_the_stream_unless_one_is_named() -> None:
    assert DemoOptions().stream_for("classification") == "sea"
    assert DemoOptions().stream_for("regression") == "friedman"
    assert DemoOptions(stream="hyperplane").stream_for("classification") == "hyperplane"
    with pytest.raises(DemoError, match="--stream friedman is a regression stream"):
        DemoOptions(stream="friedman").stream_for("classification")


def test_a_notice_does_not_end_a_trial() -> None:
    canary = dataclasses.replace(version(3, "tree", "canary", 2999), rollout={"fraction": 0.5})
    rollback = version(2, "tree", "rollback", 1499)
    log = (version(2, "tree", "challenger", 1499), canary, DRIFT, RESET, rollback)
    (trial,) = trial_results(log, (1.0, 2.0, 3.0, 3.0, 4.0), origin=0.0)
    assert (trial.ended_by, trial.ended) == (rollback, 4.0)
    assert trial_end(log, canary) == rollback
    assert trial_end(log[:4], canary) is None
