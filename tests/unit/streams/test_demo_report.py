"""The pure parts of ``driftline demo``: summary, markdown and plot from plain records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams.cli.demo import (
    DemoOptions,
    Observation,
    RateMeter,
    build_summary,
    plot_rolling_metric,
    record_event,
    summary_markdown,
)
from streams.cli.demo.report import served_when_produced
from streams.cli.demo.watcher import TopicWatcher
from streams.contract import event_position
from streams.registry.records import ArtifactRef, ModelVersion
from streams.topics import Topics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def metrics_report(
    events: int, steady: float, agile: float, *, champion: str = "steady", version: int = 1
) -> dict[str, Any]:
    def scores(accuracy: float) -> dict[str, Any]:
        return {
            "n": events,
            "rolling": {"n": min(events, 1000), "accuracy": accuracy, "f1": None},
            "cumulative": {"n": events, "accuracy": accuracy - 0.01, "f1": None},
        }

    return {
        "model": "sea",
        "events": events,
        "champion": champion,
        "champion_reason": "test",
        "version": version,
        "candidates": {"steady": scores(steady), "agile": scores(agile)},
        "offset": events - 1,
    }


def model_version(
    number: int, candidate: str, kind: str, last_offset: int, **evidence: Any
) -> ModelVersion:
    return ModelVersion(
        model="sea",
        version=number,
        kind=kind,
        candidate={"name": candidate, "params": {}},
        previous_version=number - 1 or None,
        reason=f"{candidate} won | by a margin",
        evidence={"window": [last_offset - 998, last_offset + 1], **evidence},
        lineage={
            "topic": "t",
            "partition": 0,
            "first_offset": 0,
            "last_offset": event_position(last_offset, None),
            "events": last_offset + 1,
        },
        artifact=ArtifactRef(key="k", sha256="0" * 64, size=1, signature="s"),
    )


@pytest.fixture
def observation() -> Observation:
    return Observation(
        metrics=(
            metrics_report(500, 0.95, 0.90),
            metrics_report(1000, 0.97, 0.93),
            metrics_report(1500, 0.90, 0.94),
            metrics_report(2000, 0.93, 0.97, champion="agile", version=2),
        ),
        versions=(
            model_version(1, "steady", "initial", 999),
            model_version(2, "agile", "challenger", 1999, p_value=0.00123),
        ),
        published_at=(110.0, 120.0),
        predictions_by_version={2: 900, 1: 1100},
        scored=2000,
    )


#: 2,000 events sent one per 10 ms from t=100: v1 (published at 110) serves from event 1,000 on,
#: v2 (published at 120) from event 2,000 on; events before 1,000 had no version yet.
PRODUCED_AT = {f"e-{n}": 100.0 + n / 100 for n in range(2000)}
SCORED = frozenset(PRODUCED_AT)


def summarise(observation: Observation, **overrides: Any):
    settings: dict[str, Any] = {
        "model": "sea",
        "metric": "accuracy",
        "stream": "sea",
        "options": DemoOptions(events=2000, rate=1000, seed=7),
        "produced_at": PRODUCED_AT,
        "scored_ids": SCORED,
        "startup_seconds": 2.0,
        "pipeline_seconds": 3.0,
        "total_seconds": 5.0,
        **overrides,
    }
    return build_summary(observation, **settings)


def test_an_observation_counts_events_learned_from_the_last_report(observation) -> None:
    assert observation.learned == 2000
    assert Observation().learned == 0


def test_a_promotion_happens_after_the_last_event_it_saw(observation) -> None:
    assert [record_event(v) for v in observation.versions] == [1000, 2000]


def test_the_summary_takes_the_last_report_and_every_version(observation) -> None:
    summary = summarise(observation)
    assert (summary.learned, summary.scored, summary.drift_at) == (2000, 2000, 1000)
    assert (summary.champion, summary.champion_version) == ("agile", 2)
    assert [(c.name, c.rolling, c.events) for c in summary.candidates] == [
        ("steady", 0.93, 2000),
        ("agile", 0.97, 2000),
    ]
    assert list(summary.predictions_by_version) == [1, 2]  # in version order
    assert summary.missing == []


def test_the_markdown_embeds_the_plot_and_lists_versions_and_predictions(observation) -> None:
    summary = summarise(
        observation,
        options=DemoOptions(events=2000, drift_at=1200),
        missing=["after 120 s: scored 1,999 of 2,000 events"],
    )
    text = summary_markdown(summary, plot_file="plot.png")
    assert "![Rolling accuracy of each candidate](plot.png)" in text
    assert "(sea stream, concept drift at 1,200)" in text
    assert "| agile (champion) | 0.9700 | 0.9600 | 2,000 |" in text
    assert "| v2 | agile | challenger | 2,000 | 1,001-2,000 | p = 0.00123 |" in text
    assert "| v1 | steady | initial | 1,000 | 1-1,000 | - |" in text
    assert "| version | serving when the event was produced | scored by it |" in text
    assert "| none yet | 1,000 | - |" in text
    assert "| v1 | 1,000 | 1,100 |" in text
    assert "| v2 | 0 | 900 |" in text
    assert "includes the scorer's lag" in text
    assert "Workers ready in 2.0 s; first event to last prediction 3.0 s" in text
    assert "- v2: agile won | by a margin" in text
    assert "## Missing" in text and "scored 1,999 of 2,000" in text


def test_the_plot_is_a_png(observation, tmp_path: Path) -> None:
    path = plot_rolling_metric(
        observation.metrics,
        observation.versions,
        metric="accuracy",
        drift_at=1200,
        path=tmp_path / "out/p.png",
    )
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000


def test_a_plot_without_records_is_still_drawn(tmp_path: Path) -> None:
    path = plot_rolling_metric([], [], metric="mae", drift_at=10, path=tmp_path / "empty.png")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_the_rate_meter_measures_the_recent_rate() -> None:
    meter = RateMeter(span=2.0)
    assert meter.update(0, now=0.0) == 0.0
    assert meter.update(100, now=1.0) == pytest.approx(100.0)
    meter.update(300, now=2.0)
    assert meter.update(600, now=3.0) == pytest.approx(250.0)  # (600 - 100) / (3 - 1)


def test_the_default_configuration_is_found_from_any_folder() -> None:
    options = DemoOptions()
    assert options.config_path.is_file()
    assert options.config_path.is_absolute()
    assert DemoOptions(events=40_000).drift_index == 20_000
    assert DemoOptions(events=40_000, drift_at=5).drift_index == 5


def test_predictions_count_by_the_version_serving_when_each_event_was_produced(
    observation,
) -> None:
    produced = {"a": 105.0, "b": 110.0, "c": 115.0, "d": 125.0, "e": 126.0, "unsent": 1.0}
    counts = served_when_produced(
        {k: v for k, v in produced.items() if k != "unsent"},
        ["a", "b", "c", "d", "unscored-but-listed", "unsent"],
        observation.versions,
        observation.published_at,
    )
    # "b" was produced the moment v1 was published: v1 served it. "e" was not scored.
    assert counts == {None: 1, 1: 2, 2: 1}
    assert list(counts) == [None, 1, 2]


def test_a_rollback_serves_the_version_it_returns_to(observation) -> None:
    rollback = model_version(1, "steady", "rollback", 999)
    versions = (*observation.versions, rollback)
    counts = served_when_produced(
        {"a": 115.0, "b": 125.0, "c": 135.0}, ["a", "b", "c"], versions, (110.0, 120.0, 130.0)
    )
    assert counts == {1: 2, 2: 1}


def test_a_record_timestamped_before_the_one_before_it_keeps_the_log_order(observation) -> None:
    # Two writers' clocks may disagree by a little: the log order still decides what serves.
    counts = served_when_produced(
        {"a": 115.0, "b": 125.0}, ["a", "b"], observation.versions, (120.0, 119.0)
    )
    assert counts == {None: 1, 2: 1}


def test_the_watcher_takes_the_trainer_reports_not_the_scorer_live_reports() -> None:
    import orjson

    topics = Topics.from_prefix("t.")
    watcher = TopicWatcher(topics, {}, "sea", key=b"k")
    live = {"kind": "live", "model": "sea", "version": 1, "arm": "stable", "served": 3}
    for value in (metrics_report(500, 0.9, 0.8), live, metrics_report(1000, 0.9, 0.8)):
        watcher._take(topics.metrics, orjson.dumps(value), "t.metrics[0]", 1.0)
    prediction = {"event_id": "e-1", "model": "sea", "version": 1, "prediction": True}
    watcher._take(topics.predictions, orjson.dumps(prediction), "t.predictions[0]", 1.0)
    seen = watcher.observation()
    assert [report["events"] for report in seen.metrics] == [500, 1000]
    assert (seen.scored, dict(seen.predictions_by_version)) == (1, {1: 1})
    assert watcher.scored_event_ids() == {"e-1"}
