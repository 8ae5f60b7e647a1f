"""Registry records: (de)serialization, manual records, serving versions, diffs."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from streams.registry import records as registry
from streams.registry.cli import record_differences
from streams.registry.records import (
    ArtifactRef,
    ModelVersion,
    default_operator,
    manual_record,
    parse_record,
    serving_records,
)


def trained(version: int, *, model: str = "sea", candidate: str = "steady") -> ModelVersion:
    return ModelVersion(
        model=model,
        version=version,
        kind="initial" if version == 1 else "challenger",
        candidate={"name": candidate, "params": {"lr": 0.01 * version}},
        previous_version=None if version == 1 else version - 1,
        reason=f"v{version} won",
        evidence={"p_value": 0.001 * version, "window": [1, 1000]},
        lineage={"topic": "t", "partition": 0, "last_offset": 1000 * version},
        artifact=ArtifactRef(
            key=f"dl:artifact:{version:064x}",
            sha256=f"{version:064x}",
            size=100 + version,
            signature=f"{version:064x}",
        ),
        libraries={"python": "3.11.0", "river": "0.26.1"},
    )


def test_a_record_round_trips_through_json_with_its_operator():
    record = manual_record(
        trained(1), kind="rollback", previous_version=3, reason="bad", operator="alice"
    )
    assert ModelVersion.from_json(record.to_json()) == record


def test_records_written_before_operator_existed_still_parse():
    record = trained(2)
    data = dataclasses.asdict(record)
    del data["operator"]
    assert ModelVersion.from_json(orjson.dumps(data)) == record


def test_fields_a_newer_writer_adds_are_ignored():
    record = trained(2)
    data = {**dataclasses.asdict(record), "approved_by": ["bob"]}
    assert ModelVersion.from_json(orjson.dumps(data)) == record


@pytest.mark.parametrize(
    "raw", [None, b"", b"not json", b"[1, 2]", b'{"model": "sea"}', b'{"artifact": {}}']
)
def test_a_malformed_record_is_skipped_not_raised(raw):
    assert parse_record(raw, where="registry[0]@7") is None


def test_a_manual_record_repeats_the_target_and_says_who_and_why():
    target = trained(1)
    record = manual_record(
        target, kind="rollback", previous_version=3, reason="v3 misbehaves", operator="alice"
    )
    assert record.version == 1
    assert record.kind == "rollback"
    assert record.is_manual and not target.is_manual
    assert record.previous_version == 3
    assert (record.reason, record.operator, record.evidence) == ("v3 misbehaves", "alice", {})
    for same in ("model", "candidate", "artifact", "lineage", "libraries"):
        assert getattr(record, same) == getattr(target, same)


@pytest.mark.parametrize(
    ("kind", "reason", "message"),
    [("challenger", "why", "kind"), ("manual", "  ", "reason")],
)
def test_a_manual_record_needs_a_manual_kind_and_a_reason(kind, reason, message):
    with pytest.raises(ValueError, match=message):
        manual_record(trained(1), kind=kind, previous_version=2, reason=reason, operator="a")


def test_the_serving_version_is_that_of_the_last_record_in_log_order():
    rollback = manual_record(
        trained(1), kind="rollback", previous_version=3, reason="r", operator="o"
    )
    records = [trained(1), trained(2), trained(1, model="other"), trained(3), rollback]
    serving = serving_records(records)
    assert serving["sea"] is rollback
    assert serving["other"].version == 1


def test_the_operator_comes_from_the_environment_else_the_os_user(monkeypatch):
    assert default_operator({"DRIFTLINE_OPERATOR": "alice"}) == "alice"
    monkeypatch.setattr(registry.getpass, "getuser", lambda: "bob")
    assert default_operator({}) == "bob"

    def no_user() -> str:
        raise OSError("no login name")

    monkeypatch.setattr(registry.getpass, "getuser", no_user)
    assert default_operator({}) == "unknown"


def test_a_diff_lists_the_leaves_that_differ():
    first, second = trained(1), trained(2, candidate="agile")
    differences = {name: (a, b) for name, a, b in record_differences(first, second)}
    assert differences["candidate.name"] == ("steady", "agile")
    assert differences["candidate.params.lr"] == (0.01, 0.02)
    assert differences["evidence.p_value"] == (0.001, 0.002)
    assert differences["artifact.sha256"] == (first.artifact.sha256, second.artifact.sha256)
    assert "evidence.window" not in differences
    assert "version" not in differences and "created_at" not in differences
    assert record_differences(first, first) == []
