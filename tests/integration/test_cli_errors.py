"""A user's mistake ends a ``driftline`` command with one line on stderr and exit status 2."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "streams" / "examples" / "sea.toml"
# Nothing listens on the discard port: a broker address that refuses every connection.
UNREACHABLE = "127.0.0.1:9"


def _one_line_refusal(result, command: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"driftline {command}: ")
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("produce", ("produce", "--synthetic", "sea", "--events", "10", "--quiet")),
        ("registry ls", ("registry", "ls")),
        ("tail", ("tail", "dlq")),
    ],
)
def test_an_unreachable_broker_is_named_within_seconds(driftline_env, driftline_cli, command, args):
    env = {**driftline_env, "KAFKA_BOOTSTRAP_SERVERS": UNREACHABLE}
    started = time.monotonic()
    result = driftline_cli(*args, env=env, timeout=60)
    elapsed = time.monotonic() - started
    line = _one_line_refusal(result, command)
    assert UNREACHABLE in line and "KAFKA_BOOTSTRAP_SERVERS" in line
    assert elapsed < 20, f"{elapsed:.1f} s"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"DRIFTLINE__worker__partitions": "abc"}, "DRIFTLINE__worker__partitions=abc"),
        ({"DRIFTLINE__worker__partitions": "0"}, "DRIFTLINE__worker__partitions=0"),
        ({"DRIFTLINE__models__sae__window": "500"}, "did you mean 'sea'?"),
        ({"DRIFTLINE__worker__partitons": "2"}, "did you mean 'partitions'?"),
    ],
)
def test_a_bad_override_stops_the_worker_in_one_line(
    driftline_env, driftline_cli, override, expected
):
    env = {**driftline_env, **override}
    result = driftline_cli("worker", "--config", str(EXAMPLE), env=env, timeout=60)
    assert expected in _one_line_refusal(result, "worker")


def test_config_file_mistakes_stop_the_worker_in_one_line(driftline_env, driftline_cli, tmp_path):
    typo = tmp_path / "typo.toml"
    typo.write_text(EXAMPLE.read_text().replace("LogisticRegression", "LogisticRegresion"))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(EXAMPLE.read_text().replace("window = 1000", "windw = 1000"))
    invalid = tmp_path / "invalid.toml"
    invalid.write_text("[models.sea\n")
    cases = {
        typo: "did you mean 'LogisticRegression'?",
        unknown: "unknown fields ['windw']",
        invalid: "is not valid TOML",
        tmp_path / "absent.toml": "cannot read the configuration",
    }
    for path, expected in cases.items():
        for command in ("worker", "score"):
            result = driftline_cli(command, "--config", str(path), env=driftline_env, timeout=60)
            assert expected in _one_line_refusal(result, command)


def test_a_worker_leaves_no_data_folder_in_the_working_directory(driftline_env, tmp_path):
    # faust makes an empty "<group>-data" folder where it runs, unless told otherwise.
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli.main", "worker", "--config", str(EXAMPLE)],
        env=driftline_env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(15)  # long enough to create the topics and start the app
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(30)
    assert list(tmp_path.iterdir()) == []
