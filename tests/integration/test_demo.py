"""``driftline demo`` end to end, on the test session's broker and Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MARKER = "DRIFTLINE_DEMO_TEST_MARKER"


def processes_with(marker: str) -> list[int]:
    """Pids of processes whose environment holds ``marker`` (the demo's workers inherit it)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def test_the_demo_learns_scores_and_reports(
    driftline_env: dict, driftline_cli, tmp_path: Path
) -> None:
    marker = f"{MARKER}={uuid.uuid4().hex}"
    report = tmp_path / "report"
    report.mkdir()
    # A log of an earlier run: each run writes its own from the start.
    (report / "trainer.log").write_text("EARLIER RUN\n")
    result = driftline_cli(
        "demo",
        "--events",
        "6000",
        "--rate",
        "3000",
        "--report-dir",
        str(report),
        env={**driftline_env, MARKER: marker.split("=", 1)[1]},
        cwd=tmp_path,  # the default configuration is found from any folder
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "using Kafka at" in result.stderr  # the session's broker, not a stack of its own

    plot = (report / "rolling_accuracy.png").read_bytes()
    assert plot.startswith(PNG_MAGIC)
    assert len(plot) > 10_000
    summary = (report / "summary.md").read_text()
    assert "| v1 | steady | initial |" in summary
    assert "6,000 learned, 6,000 scored" in summary
    assert "Workers ready in" in summary
    assert "| version | serving when the event was produced | scored by it |" in summary
    served = [int(row.split("|")[2].replace(",", "")) for row in _prediction_rows(summary)]
    assert sum(served) == 6000, summary
    assert "rolling_accuracy.png" in summary
    trainer_log = (report / "trainer.log").read_text()
    assert "assigned partitions" in trainer_log and "EARLIER RUN" not in trainer_log
    assert (report / "scorer.log").exists()

    assert processes_with(marker) == [], "the demo left a worker running"


def _prediction_rows(summary: str) -> list[str]:
    table = summary.split("## Predictions per version", 1)[1].split("\n\n")[1]
    return table.splitlines()[2:]
