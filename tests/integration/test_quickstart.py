"""The README's quick start, run verbatim in a fresh shell, ends with a promotion.

The block is taken from README.md as it stands and run by a new ``bash`` from the repository's
folder, with an environment a new terminal would have (no Kafka or Redis settings, no key) plus
``DRIFTLINE_STACK_DIR``, so that its stack is its own. After the block the test polls
``driftline registry ls`` until a version serves, then stops what the block started.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_DEADLINE = 240  # seconds for the whole run, stack start-up included


def quickstart_block(readme: str) -> str:
    """The first ``bash`` block under the README's "Quick start" heading."""
    section = readme.split("\n## Quick start\n", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match, "no bash block in the quick start"
    return match.group(1)


def _fresh_environment(stack_dir: Path) -> dict[str, str]:
    venv_bin = str(REPO / ".venv" / "bin")
    path = os.pathsep.join(
        part for part in os.environ.get("PATH", "").split(os.pathsep) if part != venv_bin
    )
    keep = ("HOME", "USER", "LANG", "TERM", "XDG_CACHE_HOME", "DRIFTLINE_CACHE_DIR")
    return {
        **{name: os.environ[name] for name in keep if name in os.environ},
        "PATH": path,
        "DRIFTLINE_STACK_DIR": str(stack_dir),
    }


@pytest.mark.slow
def test_the_quick_start_works_as_pasted(tmp_path):
    block = quickstart_block((REPO / "README.md").read_text())
    assert "127.0.0.1" not in block and "KAFKA_BOOTSTRAP_SERVERS=" not in block
    script = "\n".join(
        [
            # Ours, around the block: stop whatever it started, however the script ends.
            "trap 'kill $(jobs -p) 2>/dev/null; wait; driftline stack down' EXIT",
            block,
            "for _ in $(seq 120); do",
            "  driftline registry ls 2>/dev/null | grep -q ' v[0-9]' && exit 0",
            "  sleep 1",
            "done",
            "echo 'no promotion within 120 s' >&2; cat trainer.log >&2; exit 1",
        ]
    )
    data_folders = set(REPO.glob("*-data"))
    try:
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=REPO,
            env=_fresh_environment(tmp_path / "stack"),
            capture_output=True,
            text=True,
            timeout=_DEADLINE,
        )
    finally:
        (REPO / "trainer.log").unlink(missing_ok=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert re.search(r"sea\s+.*v\d", result.stdout), result.stdout
    assert not (tmp_path / "stack" / "stack.json").exists(), "the stack was not stopped"
    assert set(REPO.glob("*-data")) == data_folders, (
        "a command left a data folder in the repository"
    )
