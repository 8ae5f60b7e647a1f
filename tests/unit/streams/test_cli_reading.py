"""The CLI reads what driftline writes: tail's lines, versions as tables print them, rollback."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import pytest

from streams.cli.tail import format_record
from streams.registry.cli import parse_version, previous_version
from streams.stack import Endpoints, LocalStack

REPO = Path(__file__).resolve().parents[3]


class _Record:
    def __init__(self, version: int, manual: bool = False) -> None:
        self.version, self.is_manual, self.model = version, manual, "sea"


@pytest.mark.parametrize(("text", "version"), [("v2", 2), ("V12", 12), ("3", 3)])
def test_versions_are_read_as_the_tables_print_them(text, version):
    assert parse_version(text) == version


@pytest.mark.parametrize("text", ["v", "v0", "two", "-1", "2.0"])
def test_a_malformed_version_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_version(text)


def test_rollback_without_a_target_goes_to_the_version_before_the_serving_one():
    assert previous_version([_Record(1), _Record(2), _Record(3)]) == 2  # type: ignore[list-item]
    rolled_back = [_Record(1), _Record(2), _Record(3), _Record(2, manual=True)]
    assert previous_version(rolled_back) == 1  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="first version"):
        previous_version([_Record(1)])  # type: ignore[list-item]


def test_metrics_and_registry_records_read_as_one_line():
    metrics = {
        "model": "sea",
        "events": 21000,
        "champion": "steady",
        "version": 1,
        "candidates": {"steady": {"rolling": {"accuracy": 0.8921, "n": 1000}}, "agile": {}},
    }
    line = format_record("metrics", metrics)
    assert line.startswith("sea  21,000 events  champion steady v1")
    assert "steady: accuracy 0.892" in line and "agile: no metrics yet" in line
    record = {
        "model": "sea",
        "version": 2,
        "kind": "challenger",
        "previous_version": 1,
        "candidate": {"name": "agile"},
        "created_at": "2026-11-26T14:06:38+00:00",
        "operator": None,
        "reason": "'agile' beat champion 'steady'",
    }
    assert format_record("registry", record) == (
        "sea v2  challenger  agile  (was v1)  2026-11-26T14:06:38+00:00  by trainer: "
        "'agile' beat champion 'steady'"
    )


def test_stack_up_prints_export_lines_with_the_key_file():
    lines = Endpoints("127.0.0.1:1", "redis://127.0.0.1:2/0", Path("/state dir/signing.key"))
    assert lines.shell_lines().splitlines() == [
        "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1",
        "export REDIS_URL=redis://127.0.0.1:2/0",
        "export DRIFTLINE_SIGNING_KEY_FILE='/state dir/signing.key'",
    ]
    assert "SIGNING" not in Endpoints("h:1", "redis://h:2/0").shell_lines()


def test_the_development_key_is_private_and_kept_while_the_stack_lives(tmp_path):
    stack = LocalStack(tmp_path / "stack")
    path = stack._ensure_signing_key()
    key = path.read_text()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(key.strip()) == 64
    assert stack._ensure_signing_key().read_text() == key
    stack.down(keep_data=True)
    assert path.exists()
    stack.down()
    assert not path.exists()


def test_the_readme_shows_the_example_configuration_as_it_is():
    readme = (REPO / "README.md").read_text()
    example = (REPO / "streams" / "examples" / "sea.toml").read_text()
    assert f"```toml\n{example}```\n" in readme


def test_the_readme_invokes_the_cli_one_way():
    readme = (REPO / "README.md").read_text()
    assert ".venv/bin/driftline" not in readme
