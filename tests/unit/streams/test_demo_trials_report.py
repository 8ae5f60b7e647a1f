"""The pure parts of ``driftline demo --delayed-labels``: trials, live accuracy, report, plot."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from streams.cli.demo import DemoOptions, Observation, build_summary, summary_markdown
from streams.cli.demo.delayed import (
    TrialDirector,
    check_options,
    guardrail_note,
    trial_end,
    worker_environment,
)
from streams.cli.demo.errors import DemoError
from streams.cli.demo.live import LiveState, live_view
from streams.cli.demo.report import (
    DelayedLabels,
    latest_live,
    live_curves,
    plot_live_metric,
    trial_results,
)
from streams.cli.demo.trials import publish_canary, train_candidate
from streams.registry.artifacts import Artifact
from streams.registry.client import LiveReport
from streams.registry.records import ArtifactRef, ModelVersion, RecordKind
from streams.sdk.outcomes import OutcomeCounts
from trainers.synthetic import drift_stream

KEY = b"k" * 32
SPEC = {"name": "steady", "river": "StandardScaler | LogisticRegression"}


def record(version: int, kind: str, **changes: Any) -> ModelVersion:
    base = ModelVersion(
        model="sea",
        version=version,
        kind=kind,
        candidate={"name": "steady", "params": {}},
        previous_version=None,
        reason=kind,
        evidence={},
        lineage={"last_offset": 999},
        artifact=ArtifactRef(key="k", sha256="0" * 64, size=1, signature="s"),
    )
    return dataclasses.replace(base, **changes)


def live(version: int, arm: str, joined: int, accuracy: float, ts: float) -> LiveReport:
    scores = {"accuracy": accuracy}
    return LiveReport(
        "sea", version, arm, served=joined + 5, joined=joined,
        metrics={"rolling": scores, "cumulative": scores}, ts=ts,
    )  # fmt: skip


def rollback(stable: int, trial: int) -> ModelVersion:
    evidence = {"n_canary": 22, "n_stable": 18, "difference": 0.9, "lower": 0.01, "upper": 1.0}
    return record(
        stable, "rollback", previous_version=trial, operator="guardrail", evidence=evidence
    )


def test_a_trial_ends_with_the_next_record_that_is_not_an_alert() -> None:
    canary = record(2, "canary")
    log = [record(1, "initial"), canary, record(1, "alert")]
    assert trial_end(log, canary) is None
    end = rollback(1, 2)
    assert trial_end([*log, end], canary) is end
    assert trial_end([record(1, "initial")], canary) is None  # not seen yet


def test_the_director_starts_the_bad_canary_then_the_good_one_after_its_end() -> None:
    launched: list[tuple[bool, int, int]] = []

    def launch(bad: bool, stable: ModelVersion, version: int) -> ModelVersion:
        launched.append((bad, stable.version, version))
        return record(version, "canary", rollout={"fraction": 0.5})

    director = TrialDirector(model="sea", start_at=100, launch=launch)
    log = [record(1, "initial")]
    director.step(50, log)
    assert launched == [] and "starts at event 100" in director.summary()
    director.step(100, log)
    assert launched == [(True, 1, 2)]
    director.step(200, log)  # its record is not read yet: it still runs
    log += [record(2, "canary"), rollback(1, 2)]
    director.step(300, log)
    assert launched == [(True, 1, 2), (False, 1, 3)]
    log += [record(3, "canary"), record(3, "rollout", operator="guardrail")]
    director.step(400, log)
    assert director.done and len(launched) == 2
    assert director.summary() == (
        "v2 bad (flipped labels): rollback by guardrail (to v1); v3 good: rollout by guardrail"
    )


def test_the_director_waits_for_a_trial_it_did_not_start() -> None:
    director = TrialDirector(model="sea", start_at=0, launch=lambda *_: pytest.fail("launched"))
    director.step(10, [record(1, "initial"), record(2, "canary")])
    assert director.trials == []


def test_the_mode_loosens_the_guardrail_and_says_so() -> None:
    env = worker_environment("sea")
    assert env["DRIFTLINE__models__sea__rollout__tolerance"] == "0.1"
    assert env["DRIFTLINE__models__sea__rollout__min_outcomes"] == "300"
    assert env["DRIFTLINE__worker__metrics_interval"] == "1"
    assert "tolerance 0.1 instead of 0.02" in guardrail_note("sea")
    with pytest.raises(DemoError, match="at least 6,000 events"):
        check_options(DemoOptions(events=5_000, delayed_labels=True), "classification")
    with pytest.raises(DemoError, match="classification model, not regression"):
        check_options(DemoOptions(events=10_000, delayed_labels=True), "regression")


def test_a_bad_canary_is_stored_signed_and_published_beside_the_stable_version() -> None:
    examples = list(drift_stream("sea", n=500, drift_at=10**9, seed=3))
    bad = train_candidate(SPEC, "classification", examples, flip=True)
    good = train_candidate(SPEC, "classification", examples)
    held_out = list(drift_stream("sea", n=300, drift_at=10**9, seed=4))
    right = [sum(m.predict_one(x) == y for x, y in held_out) for m in (bad, good)]
    assert right[0] < 100 < 200 < right[1]

    stored: dict[str, bytes] = {}
    published: list[ModelVersion] = []

    class Store:
        def set(self, name: str, value: bytes) -> None:
            stored[name] = value

    stable = record(1, "initial")
    canary = publish_canary(
        bad, name="steady", stable=stable, version=2, fraction=0.5, reason="bad on purpose",
        operator="demo", key=KEY, redis_prefix="p:", store=Store(), publish=published.append,
        lineage={"last_offset": 4999},
    )  # fmt: skip
    assert published == [canary]
    assert (canary.kind, canary.version, canary.previous_version) == (RecordKind.CANARY, 2, 1)
    assert canary.rollout == {"fraction": 0.5} and canary.operator == "demo"
    assert canary.lineage == {"last_offset": 4999}
    canary.verify(KEY)
    blob = stored[canary.artifact.key]
    loaded = Artifact(blob, canary.artifact).load(model="sea", version=2, key=KEY)
    assert loaded.predict_one(held_out[0][0]) == bad.predict_one(held_out[0][0])


def test_a_good_canary_goes_on_learning_from_a_copy_of_the_stable_version() -> None:
    stable = train_candidate(
        SPEC, "classification", drift_stream("sea", n=300, drift_at=10**9, seed=5)
    )
    before = stable.predict_proba_one({"x1": 9.0, "x2": 1.0, "x3": 4.0})
    examples = list(drift_stream("sea", n=300, drift_at=10**9, seed=6))
    good = train_candidate(SPEC, "classification", examples, start=stable)
    assert good is not stable
    assert stable.predict_proba_one({"x1": 9.0, "x2": 1.0, "x3": 4.0}) == before


REPORTS = (
    live(1, "stable", 10, 0.99, 101.0),
    live(2, "canary", 8, 0.02, 102.0),
    live(1, "stable", 30, 0.98, 103.0),
    live(2, "canary", 8, 0.02, 104.0),  # stopped serving: nothing new joined
)


def test_live_accuracy_keeps_the_last_report_per_version_and_arm() -> None:
    latest = latest_live(REPORTS)
    assert list(latest) == [(1, "stable"), (2, "canary")]
    assert latest[(1, "stable")].joined == 30


def test_a_live_curve_ends_with_the_last_outcome_joined() -> None:
    curves = live_curves(REPORTS, "accuracy", origin=100.0)
    assert curves == {(1, "stable"): ([1.0, 3.0], [0.99, 0.98]), (2, "canary"): ([2.0], [0.02])}


VERSIONS = (
    record(1, "initial"),
    record(2, "canary", rollout={"fraction": 0.5}),
    rollback(1, 2),
    record(3, "canary", rollout={"fraction": 0.5}),
)
PUBLISHED_AT = (101.0, 104.0, 106.5, 107.0)


def test_trials_are_found_in_the_registry_with_what_ended_them() -> None:
    first, second = trial_results(VERSIONS, PUBLISHED_AT, origin=100.0)
    assert (first.record.version, first.started, first.ended) == (2, 4.0, 6.5)
    assert first.ended_by is not None and first.ended_by.kind is RecordKind.ROLLBACK
    assert (second.record.version, second.ended_by, second.ended) == (3, None, None)


@pytest.fixture
def observation() -> Observation:
    trainer = {
        "model": "sea",
        "events": 2000,
        "offset": 1999,
        "champion": "steady",
        "version": 1,
        "candidates": {
            "steady": {"n": 2000, "rolling": {"accuracy": 0.95}, "cumulative": {"accuracy": 0.9}}
        },
    }
    return Observation(
        metrics=(trainer, {**trainer, "events": 2500, "offset": 2499}),
        metrics_at=(102.0, 105.0),
        versions=VERSIONS,
        published_at=PUBLISHED_AT,
        predictions_by_version={1: 40, 2: 13},
        scored=53,
        live=REPORTS,
        join_counts={"expired": 1, "unmatched": 2},
    )


def test_the_report_shows_live_accuracy_per_arm_and_the_trials(observation) -> None:
    delayed = DelayedLabels(
        warmup=2000,
        outcomes=OutcomeCounts(events=60, outcomes=58, before=6, missing=2),
        live=list(latest_live(observation.live).values()),
        trials=trial_results(observation.versions, observation.published_at, origin=100.0),
        expired=1,
        unmatched=2,
    )
    summary = build_summary(
        observation, model="sea", metric="accuracy", stream="sea",
        options=DemoOptions(events=2060, delayed_labels=True),
        produced_at={}, scored_ids=(), startup_seconds=1, pipeline_seconds=2, total_seconds=3,
        delayed=delayed,
    )  # fmt: skip
    text = summary_markdown(summary)
    assert "2,000 labeled warm-up events" in text
    assert "58 outcomes sent (6 before their event, 2 never), 38 joined" in text
    assert "1 predictions expired, 2 outcomes unmatched" in text
    assert "## Live accuracy per served version and arm" in text
    assert "| v1 | stable | 35 | 30 | 0.9800 | 0.9800 |" in text
    assert "| v2 | canary | 13 | 8 | 0.0200 | 0.0200 |" in text
    assert (
        "| v2 canary | 50% | 4.0 | rollback of v1 by guardrail | 2.5 | 22/18 "
        "| +0.900 [+0.010, +1.000] |"
    ) in text
    assert "| v3 canary | 50% | 7.0 | - | running | - | - |" in text


def test_the_live_view_shows_live_accuracy_per_arm(observation) -> None:
    from rich.console import Console

    console = Console(width=140, record=True)
    state = LiveState(events=100, metric="accuracy", phase="streaming", note="guardrail loosened")
    console.print(live_view(state, observation))
    text = console.export_text()
    assert "guardrail loosened" in text and "live accuracy per served version" in text
    assert "v2" in text and "canary" in text and "0.0200" in text


def test_the_plot_draws_both_panels(observation, tmp_path: Path) -> None:
    path = plot_live_metric(
        observation, metric="accuracy", origin=100.0, drift_sent_at=105.0, path=tmp_path / "p.png"
    )
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert path.stat().st_size > 20_000
