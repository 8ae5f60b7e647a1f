"""``driftline demo --delayed-labels`` end to end, on the test session's broker and Redis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _table(summary: str, title: str) -> list[list[str]]:
    """The rows of the markdown table under ``## title``, as cells."""
    block = summary.split(f"## {title}", 1)[1].split("\n\n")[1]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in block.splitlines()[2:]]


def test_the_delayed_labels_demo_rolls_a_bad_canary_back_and_a_good_one_out(
    driftline_env: dict, driftline_cli, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    result = driftline_cli(
        "demo",
        "--delayed-labels",
        "--events",
        "10000",
        "--drift-at",
        "9000",
        "--outcome-delay",
        "0.2-1",
        "--report-dir",
        str(report),
        env=driftline_env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "guardrail of sea loosened" in result.stderr  # said on screen

    summary = (report / "summary.md").read_text()
    assert "2,000 labeled warm-up events" in summary
    # Every label after the warm-up came through the join: 10% early, 1% never.
    sent = re.search(
        r"([\d,]+) outcomes sent \(([\d,]+) before their event, ([\d,]+) never\)", summary
    )
    assert sent is not None, summary
    outcomes, before, never = (int(group.replace(",", "")) for group in sent.groups())
    assert outcomes + never == 8000 and 400 < before < 800 and 20 < never < 120
    assert "8,000 scored" in summary

    trials = _table(summary, "Trials")
    assert [row[0] for row in trials] == ["v2 canary", "v3 canary"], summary
    assert trials[0][3] == "rollback of v1 by guardrail"
    assert trials[1][3] == "rollout of v3 by guardrail"

    live = {
        (row[0], row[1]): row for row in _table(summary, "Live accuracy per served version and arm")
    }
    assert {("v1", "stable"), ("v2", "canary"), ("v3", "canary"), ("v3", "stable")} <= set(live)
    assert float(live[("v2", "canary")][5]) < 0.3  # the flipped model, on live traffic
    assert float(live[("v3", "canary")][5]) > 0.8
    assert float(live[("v1", "stable")][5]) > 0.8

    plot = (report / "rolling_accuracy.png").read_bytes()
    assert plot.startswith(PNG_MAGIC) and len(plot) > 20_000
