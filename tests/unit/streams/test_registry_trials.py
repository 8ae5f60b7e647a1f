"""Trials by an operator's hand: ``registry promote --canary/--shadow``, ``rollout``, ``rollback``
of a trial, and what ``ls``, ``show`` (its live section) and ``history`` print.

The registry topic is a list here: the client reads it through a patched ``_records`` and
publishes to it through a fake ``KafkaProducer``, so every rule of the real client runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

import streams.registry.client as client_module
from streams.registry.cli import act, add_registry_parser, live_rows
from streams.registry.client import LiveReport, ManualRecordRefused, RegistryClient
from streams.registry.records import (
    MANUAL_KINDS,
    OPERATOR_KINDS,
    ArtifactRef,
    ModelVersion,
    RecordKind,
    manual_record,
    serving_state,
)

KEY = b"deployment key"


def trained(version: int, kind: str = "challenger") -> ModelVersion:
    return ModelVersion(
        model="sea",
        version=version,
        kind=kind,
        candidate={"name": f"cand{version}", "params": {}},
        previous_version=None if version == 1 else version - 1,
        reason=f"v{version} won",
        evidence={
            "metric": "accuracy",
            "challenger_metric": 0.8 + version / 100,
            "window": [1000 * version, 2000 * version],
            "test": "mcnemar",
            "p_value": 0.001,
        },
        lineage={"topic": "t", "partition": 0, "last_offset": 1000 * version},
        artifact=ArtifactRef(f"dl:artifact:{version}", f"{version:064x}", 10, f"sig{version}"),
        created_at=f"2026-11-26T14:0{version}:00+00:00",
    ).signed(KEY)


class Registry:
    """The registry topic as a list, and a fake producer that appends to it."""

    def __init__(self, *records: ModelVersion) -> None:
        self.log = list(records)

    def producer(self, **config: Any) -> Any:
        registry = self

        class Producer:
            def send(self, topic: str, key: bytes, value: bytes) -> Any:
                record = ModelVersion.from_json(value)
                record.verify(KEY)
                assert key == record.model.encode()
                registry.log.append(record)
                return SimpleNamespace(get=lambda timeout: "metadata")

            def flush(self) -> None:
                pass

            def close(self) -> None:
                pass

        return Producer()


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Registry:
    registry = Registry(trained(1, "initial"), trained(2), trained(3))
    monkeypatch.setattr(client_module, "KafkaProducer", registry.producer)
    monkeypatch.setenv("DRIFTLINE_OPERATOR", "alice")
    return registry


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes | None, bytes]]:
    """The metrics topic's (key, value) records, as ``read_to_end`` yields them."""
    records: list[tuple[bytes | None, bytes]] = []

    def read_to_end(topic: str, kafka: Any, **options: Any) -> Iterator[Any]:
        assert topic == "metrics"
        return iter(SimpleNamespace(key=key, value=value) for key, value in records)

    monkeypatch.setattr(client_module, "read_to_end", read_to_end)
    return records


@pytest.fixture
def client(registry: Registry) -> RegistryClient:
    client = RegistryClient("b:1", signing_key=KEY, topic="registry", metrics_topic="metrics")
    client._records = lambda: list(registry.log)  # type: ignore[method-assign]
    return client


def run(client: RegistryClient, *argv: str) -> None:
    parser = argparse.ArgumentParser()
    add_registry_parser(parser.add_subparsers(dest="command"), handler=lambda args: 0)
    act(client, parser.parse_args(["registry", *argv]))


def test_operator_kinds_add_trials_and_rollouts_to_the_manual_ones():
    assert {RecordKind.MANUAL, RecordKind.ROLLBACK} == MANUAL_KINDS
    assert {"manual", "rollback", "canary", "shadow", "rollout"} == OPERATOR_KINDS
    canary = manual_record(
        trained(2), kind="canary", previous_version=3, reason="r", operator="o",
        rollout={"fraction": 0.1},
    )  # fmt: skip
    # An operator's canary is no manual promote: the trainer must not adopt it as its champion.
    assert not canary.is_manual
    assert (canary.version, canary.artifact, canary.rollout) == (
        2,
        trained(2).artifact,
        {"fraction": 0.1},
    )


@pytest.mark.parametrize(
    ("kind", "rollout", "message"),
    [
        ("canary", None, "fraction"),
        ("canary", {"fraction": 0}, "fraction"),
        ("canary", {"fraction": 1.5}, "fraction"),
        ("canary", {"fraction": True}, "fraction"),
        ("shadow", {"fraction": 0.5}, "every event"),
        ("manual", {"fraction": 0.5}, "only a trial"),
        ("rollout", {"fraction": 1.0}, "only a trial"),
        ("alert", None, "kind"),
        ("initial", None, "kind"),
    ],
)
def test_a_manual_record_of_a_trial_needs_a_fraction_and_nothing_else_takes_one(
    kind, rollout, message
):
    with pytest.raises(ValueError, match=message):
        manual_record(
            trained(2), kind=kind, previous_version=3, reason="r", operator="o", rollout=rollout
        )


def test_promote_canary_puts_the_version_on_trial_beside_the_stable_one(client, registry, capsys):
    run(client, "promote", "sea", "v2", "--canary", "0.1", "--reason", "try v2 on live traffic")
    record = registry.log[-1]
    assert (record.kind, record.version, record.rollout) == ("canary", 2, {"fraction": 0.1})
    assert (record.operator, record.reason, record.previous_version) == (
        "alice",
        "try v2 on live traffic",
        3,
    )
    for same in ("candidate", "artifact", "lineage", "libraries"):
        assert getattr(record, same) == getattr(trained(2), same)
    assert record.evidence == {}
    state = client.state("sea")
    assert (state.stable.version, state.trial, state.canary_fraction) == (3, record, 0.1)
    assert capsys.readouterr().out == (
        "sea: v2 is on trial as a canary serving 10% of the events, beside v3; canary record by "
        "alice\n"
    )


def test_promote_shadow_scores_every_event_and_serves_none(client, registry, capsys):
    run(client, "promote", "sea", "2", "--shadow", "--reason", "compare quietly")
    record = registry.log[-1]
    assert (record.kind, record.version, record.rollout) == ("shadow", 2, {"fraction": 1.0})
    assert client.state("sea").canary_fraction == 0.0
    assert "a shadow scoring every event, beside v3" in capsys.readouterr().out


def test_rollout_makes_the_trial_stable(client, registry, capsys):
    run(client, "promote", "sea", "2", "--canary", "0.25", "--reason", "try")
    run(client, "rollout", "sea", "--reason", "v2 holds up")
    record = registry.log[-1]
    assert (record.kind, record.version, record.previous_version) == ("rollout", 2, 3)
    assert (record.rollout, record.operator) == (None, "alice")
    state = client.state("sea")
    assert (state.stable, state.trial) == (record, None)
    assert capsys.readouterr().out.splitlines()[-1] == (
        "sea: v2 serves now (was v3); rollout record by alice"
    )


def test_rollback_while_a_trial_runs_stops_it_and_keeps_the_stable_version(
    client, registry, capsys
):
    run(client, "promote", "sea", "v1", "--canary", "0.5", "--reason", "try the old one")
    run(client, "rollback", "sea", "--reason", "canary is worse")
    record = registry.log[-1]
    assert (record.kind, record.version, record.previous_version) == ("rollback", 3, 1)
    assert record.artifact == trained(3).artifact
    state = client.state("sea")
    assert (state.stable.version, state.trial) == (3, None)
    assert capsys.readouterr().out.splitlines()[-1] == (
        "sea: the trial of v1 is stopped, v3 serves alone; rollback record by alice"
    )


def test_rollback_without_a_trial_goes_to_the_previous_version_as_before(client, registry):
    run(client, "rollback", "sea", "--reason", "v3 misbehaves")
    assert (registry.log[-1].kind, registry.log[-1].version) == ("rollback", 2)
    run(client, "rollback", "sea", "--to", "1", "--reason", "further")
    assert (registry.log[-1].version, registry.log[-1].previous_version) == (1, 2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rollout", "sea"], "no version on trial"),
        (["promote", "sea", "3", "--canary", "0.1"], "stable version: nothing to try"),
        (["promote", "sea", "3"], "already serving"),
    ],
)
def test_what_would_change_nothing_is_refused(client, registry, argv, message):
    with pytest.raises(ManualRecordRefused, match=message):
        run(client, *argv, "--reason", "r")
    assert len(registry.log) == 3


def test_a_running_trial_can_change_its_fraction_but_not_be_repeated(client, registry):
    run(client, "promote", "sea", "2", "--canary", "0.1", "--reason", "start small")
    with pytest.raises(ManualRecordRefused, match="on trial as a canary already"):
        run(client, "promote", "sea", "2", "--canary", "0.1", "--reason", "again")
    run(client, "promote", "sea", "2", "--canary", "0.5", "--reason", "widen")
    assert client.state("sea").canary_fraction == 0.5
    with pytest.raises(ManualRecordRefused, match="newer than the serving v3"):
        registry.log.append(trained(4, "canary"))  # a trainer's canary: a new number
        run(client, "rollback", "sea", "--to", "4", "--reason", "r")
    # Promoting the stable version by hand while a trial runs is not a no-op: it ends the trial.
    run(client, "promote", "sea", "3", "--reason", "enough trials")
    assert client.state("sea").trial is None


@pytest.mark.parametrize("flags", [["--canary", "0"], ["--canary", "2"], ["--canary", "x"]])
def test_a_canary_fraction_outside_zero_to_one_is_refused(client, capsys, flags):
    with pytest.raises(SystemExit):
        run(client, "promote", "sea", "2", *flags, "--reason", "r")
    assert "fraction in (0, 1]" in capsys.readouterr().err


def test_canary_and_shadow_exclude_each_other(client, capsys):
    with pytest.raises(SystemExit):
        run(client, "promote", "sea", "2", "--canary", "0.1", "--shadow", "--reason", "r")
    assert "not allowed with argument" in capsys.readouterr().err


def live(number: int, arm: str, served: int, accuracy: float, **extra: Any) -> bytes:
    report = {
        "kind": "live",
        "model": "sea",
        "version": number,
        "arm": arm,
        "served": served,
        "joined": served - 100,
        "metrics": {
            "rolling": {"accuracy": accuracy - 0.01, "n": 500},
            "cumulative": {"accuracy": accuracy, "n": served - 100},
        },
        "ts": 1_795_000_000.0 + served,
    }
    return orjson.dumps({**report, **extra})


def test_live_keeps_the_newest_report_of_each_version_and_arm(client, metrics):
    metrics.extend(
        [
            (b"sea", live(3, "stable", 1000, 0.90)),
            (b"sea", orjson.dumps({"model": "sea", "events": 5000, "candidates": {}})),  # trainer
            (b"sea", live(2, "canary", 120, 0.70)),
            (b"sea", live(3, "stable", 2000, 0.91)),
            (b"sea", b"not json"),
            (b"sea", live(3, "stable", 3, 0.5, version="three")),  # malformed: skipped
            (b"fraud", orjson.dumps({"kind": "live", "model": "fraud", "version": 1})),
        ]
    )
    reports = client.live("sea")
    assert sorted(reports) == [(2, "canary"), (3, "stable")]
    stable = reports[3, "stable"]
    assert (stable.served, stable.joined, stable.metric("accuracy")) == (2000, 1900, 0.91)
    assert stable.metric("accuracy", "rolling") == 0.90
    assert stable.metric("mae") is None
    assert client.live("fraud") == {}


def test_live_rows_put_the_live_metric_next_to_the_promotion_evidence():
    state = serving_state([trained(1, "initial"), trained(2), trained(3)])["sea"]
    measured = json.loads(live(3, "stable", 2000, 0.91))["metrics"]
    reports = {
        (3, "stable"): LiveReport("sea", 3, "stable", 2000, 1900, measured),
        (1, "stable"): LiveReport("sea", 1, "stable", 50, 0, {}),
    }
    rows = live_rows(state, reports, {1: trained(1), 3: trained(3)})
    evidence = "0.{} over events {}, mcnemar p=0.001"
    assert rows == [
        ("v3", "stable", "2,000", "1,900", "accuracy", "0.9000", "0.9100",
         evidence.format("8300", "3000-6000")),
        ("v1 (retired)", "stable", "50", "0", "accuracy", "-", "-",
         evidence.format("8100", "1000-2000")),
    ]  # fmt: skip


def test_show_prints_the_stable_record_the_trial_and_the_live_section(
    client, registry, metrics, capsys
):
    run(client, "promote", "sea", "2", "--canary", "0.1", "--reason", "try")
    capsys.readouterr()
    metrics.extend(
        [(b"sea", live(3, "stable", 9000, 0.91)), (b"sea", live(2, "canary", 1000, 0.7))]
    )
    run(client, "show", "sea")
    out = capsys.readouterr().out
    record, rest = out.split("\n}\n", 1)
    assert json.loads(record + "}") == dataclasses.asdict(trained(3))
    assert "trial: v2 canary (10%)" in rest
    canary_row = next(line for line in rest.splitlines() if "│ canary" in line)
    assert "1,000" in canary_row and "0.7000" in canary_row and "0.8200" in canary_row

    run(client, "show", "sea", "--json")
    assert json.loads(capsys.readouterr().out) == dataclasses.asdict(trained(3))
    run(client, "show", "sea", "2")
    assert json.loads(capsys.readouterr().out) == dataclasses.asdict(trained(2))


def test_show_says_when_no_scoring_worker_reported(client, metrics, capsys):
    run(client, "show", "sea")
    out = capsys.readouterr().out
    assert "trial: -" in out and "live: no report from a scoring worker yet" in out


def test_ls_shows_the_trial_and_history_the_alerts(client, registry, capsys):
    run(client, "promote", "sea", "2", "--shadow", "--reason", "compare")
    alert = dataclasses.replace(trained(3), kind="alert", reason="live accuracy fell").signed(KEY)
    registry.log.append(alert)
    capsys.readouterr()
    run(client, "ls")
    row = next(line for line in capsys.readouterr().out.splitlines() if "sea" in line)
    assert "v3" in row and "v2 shadow" in row
    run(client, "history", "sea")
    history = capsys.readouterr().out
    assert "shadow 100%" in history
    assert "alert" in history and "live accuracy fell" in history
