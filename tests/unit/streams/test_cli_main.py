"""``driftline worker`` and ``produce`` arguments and settings: refused in one line, exit 2."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import streams.cli.main as cli

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``driftline worker`` would start the trainer with (nothing is started)."""
    runs: list[dict[str, Any]] = []
    # A stand-in for the trainer module: this test is about the command line, not the worker.
    trainer = types.ModuleType("streams.workers.trainer")
    trainer.create_app = object()
    monkeypatch.setitem(sys.modules, "streams.workers.trainer", trainer)

    def run(args: Any, create_app: Any, metrics: Any, **options: Any) -> int:
        runs.append({"create_app": create_app, **options})
        return 0

    monkeypatch.setattr(cli, "_run_faust_worker", run)
    return runs


def test_reset_candidates_reach_the_trainer(started: list[dict[str, Any]]) -> None:
    argv = ["worker", "--config", "sea.toml", "--reset-candidate", "sea/agile"]
    assert (
        cli.main([*argv, "--reset-candidate", "fraud/gbm", "--reset-candidate", "sea/agile"]) == 0
    )
    assert started[0]["reset_candidates"] == frozenset({"sea/agile", "fraud/gbm"})
    assert started[0]["create_app"] is sys.modules["streams.workers.trainer"].create_app
    assert cli.main(["worker", "--config", "sea.toml"]) == 0
    assert started[1]["reset_candidates"] == frozenset()


@pytest.mark.parametrize("value", ["sea", "sea/", "/agile", "sea/agile/v2", "fraud/gbm"])
def test_a_reset_candidate_that_names_no_configured_candidate_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import streams.admin

    checked = streams.admin.TopicCheck(streams.admin.TopicSettings(), warnings=[])
    monkeypatch.setattr(streams.admin, "ensure_topics", lambda *args, **kwargs: checked)
    for name, setting in {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "DRIFTLINE_SIGNING_KEY": "k",
    }.items():
        monkeypatch.setenv(name, setting)
    config = str(REPO / "examples" / "sea.toml")
    assert cli.main(["worker", "--config", config, "--reset-candidate", value]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"driftline worker: --reset-candidate {value}")
    assert error.count("\n") == 1


@pytest.mark.parametrize(
    "command",
    [
        ["worker", "--config", "examples/sea.toml"],
        ["produce", "--synthetic", "sea", "--events", "10", "--quiet"],
    ],
)
def test_a_missing_connection_setting_is_one_line_and_exit_2(command, driftline_cli) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("KAFKA_")}
    env["DRIFTLINE_SIGNING_KEY"] = "k"
    result = driftline_cli(*command, env=env, cwd=REPO, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"driftline {command[0]}: KAFKA_BOOTSTRAP_SERVERS is not set; start a local stack with "
        "'eval \"$(driftline stack up)\"' or point it at your cluster"
    ]
