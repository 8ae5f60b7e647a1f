"""Artifact retention chooses from the registry alone, and never what serves or may serve again."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from streams.registry.records import ArtifactRef, ModelVersion, RecordKind, manual_record
from streams.registry.retention import Retention, select

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def issued(
    version: int, *, days_ago: float = 365, model: str = "sea", sha: str = ""
) -> ModelVersion:
    """A trainer's record of ``version``, issued ``days_ago``, naming the artifact ``sha``."""
    digest = sha or f"{model}{version}"
    return ModelVersion(
        model=model,
        version=version,
        kind=RecordKind.INITIAL if version == 1 else RecordKind.CHALLENGER,
        candidate={"name": "steady"},
        previous_version=version - 1 or None,
        reason="test",
        evidence={},
        lineage={},
        artifact=ArtifactRef(key=f"dl:artifact:{digest}", sha256=digest, size=10, signature="s"),
        created_at=(NOW - timedelta(days=days_ago)).isoformat(),
    )


def by_hand(target: ModelVersion, kind: RecordKind, **options) -> ModelVersion:
    return manual_record(
        target, kind=kind, previous_version=None, reason="test", operator="alice", **options
    )


def verdicts(records, retention, **options) -> dict[int, str | None]:
    """Version -> why it stays (None: removed), of the one model in ``records``."""
    return {v.version: v.kept for v in select(records, retention, now=NOW, **options)}


def test_keep_n_keeps_the_newest_and_what_serves_or_a_rollback_goes_back_to():
    log = [issued(v) for v in range(1, 7)]
    assert verdicts(log, Retention(keep=1)) == {
        6: "serves",
        5: "a rollback goes back to it",
        4: None,
        3: None,
        2: None,
        1: None,
    }
    assert [v for v, kept in verdicts(log, Retention(keep=3)).items() if kept] == [6, 5, 4]
    assert not any(kept is None for kept in verdicts(log, Retention(keep=10)).values())


def test_an_age_removes_only_older_versions_and_both_rules_must_let_a_version_go():
    log = [issued(1, days_ago=200), issued(2, days_ago=120), issued(3, days_ago=60)]
    log += [issued(4, days_ago=30), issued(5, days_ago=1)]
    ninety_days = timedelta(days=90)
    assert verdicts(log, Retention(older_than=ninety_days)) == {
        5: "serves",
        4: "a rollback goes back to it",
        3: "younger than 90d",
        2: None,
        1: None,
    }
    # v2 is older than 90 days but among the 4 newest: it stays.
    both = verdicts(log, Retention(keep=4, older_than=ninety_days))
    assert both[2] == "among the 4 newest" and both[1] is None


def test_a_trial_and_every_manual_record_target_stay():
    v1, v2, v3, v4, v5 = (issued(v) for v in range(1, 6))
    # A trainer's v6 on trial as a canary beside v5, after an operator rolled back to v2 once.
    canary = dataclasses.replace(issued(6), kind=RecordKind.CANARY, rollout={"fraction": 0.1})
    log = [v1, v2, v3, by_hand(v2, RecordKind.ROLLBACK), v4, v5, canary]
    kept = verdicts(log, Retention(keep=0))
    assert kept == {
        6: "on trial (canary)",
        5: "serves",
        4: "a rollback goes back to it",
        3: None,
        2: "target of a rollback record",
        1: None,
    }


def test_after_a_rollback_the_versions_it_passed_over_may_go():
    log = [issued(v) for v in range(1, 5)]
    log.append(by_hand(log[1], RecordKind.ROLLBACK))  # back to v2: v1 is where the next goes
    assert verdicts(log, Retention(keep=0)) == {
        4: None,
        3: None,
        2: "serves",
        1: "a rollback goes back to it",
    }


def test_an_artifact_another_kept_version_names_stays():
    sea = [issued(v) for v in range(1, 4)]
    # Content-addressed: identical bytes are one key, here sea v1's and river v1's.
    river = [issued(1, model="river", sha="sea1")]
    chosen = select([*sea, *river], Retention(keep=0), now=NOW, models={"sea"})
    assert {v.version: v.kept for v in chosen} == {
        3: "serves",
        2: "a rollback goes back to it",
        1: "its artifact is river v1's, which stays",
    }


def test_notices_and_alerts_are_not_versions():
    log = [issued(1), issued(2)]
    notice = ModelVersion(
        "sea", 2, RecordKind.DRIFT, {}, None, "", {"sequence": 1}, {}, ArtifactRef("", "", 0, "")
    )
    assert verdicts([*log, notice], Retention(keep=0)) == {
        2: "serves",
        1: "a rollback goes back to it",
    }


def test_a_retention_needs_a_rule():
    with pytest.raises(ValueError, match="a count to keep, an age, or both"):
        Retention()
