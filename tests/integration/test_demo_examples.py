"""``driftline demo --config`` on the drift-actions and the regression examples, end to end.

Short runs on the test session's broker and Redis: the stream is SEA for the classification
example and Friedman for the regression one (the model's task picks it), each with its concept
switch in the middle. The default example's run is tests/integration/test_demo.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = Path(__file__).parents[2] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_demo(driftline_cli, driftline_env: dict, config: str, report: Path, events: int):
    result = driftline_cli(
        "demo",
        "--config",
        str(EXAMPLES / config),
        "--events",
        str(events),
        "--rate",
        "2000",
        "--report-dir",
        str(report),
        env=driftline_env,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_the_drift_actions_example_reports_the_drift_and_its_actions(
    driftline_env: dict, driftline_cli, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    result = run_demo(driftline_cli, driftline_env, "drift_actions.toml", report, events=6000)

    summary = (report / "summary.md").read_text()
    assert "6,000 learned, 6,000 scored" in summary
    assert "(sea stream, concept drift at 3,000)" in summary
    notices = section(summary, "Drift, actions and alerts")
    drift_rows = [row for row in notices.splitlines() if "| drift |" in row]
    assert drift_rows, summary
    # The first detection comes after the switch, and each of its actions is listed with it.
    first_at = int(drift_rows[0].split("|")[3].replace(",", ""))
    assert 3000 < first_at <= 3500, summary
    caused = [row for row in notices.splitlines() if "| action |" in row and "notice 1)" in row]
    for action in ("reset:", "refit", "cooldown shortened"):
        assert any(action in row for row in caused), (action, summary)
    versions = section(summary, "Versions published")
    assert "| drift |" not in versions and "| action |" not in versions
    # The terminal's tables list them too.
    assert "Drift, actions and alerts" in result.stdout and "ADWIN detected" in result.stdout
    assert (report / "rolling_accuracy.png").read_bytes().startswith(PNG_MAGIC)


def test_the_regression_example_is_reported_in_mae(
    driftline_env: dict, driftline_cli, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    run_demo(driftline_cli, driftline_env, "regression.toml", report, events=5000)

    summary = (report / "summary.md").read_text()
    assert "(friedman stream, concept drift at 2,500)" in summary
    assert "5,000 learned, 5,000 scored" in summary
    assert "accuracy" not in summary.lower()
    assert "| candidate | rolling mae | cumulative mae | events learned |" in summary
    assert "![Rolling mae of each candidate](rolling_mae.png)" in summary
    assert "| v1 | linear | initial |" in summary
    plot = (report / "rolling_mae.png").read_bytes()
    assert plot.startswith(PNG_MAGIC) and len(plot) > 10_000
    assert not (report / "rolling_accuracy.png").exists()
