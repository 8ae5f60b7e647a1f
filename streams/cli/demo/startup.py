"""The workers' start-up, as the demo shows it: read from the lines their logs already write.

A faust worker takes seconds to start (imports, joining its consumer group, reading the registry);
until its first metrics report, "events learned 0" would say nothing about why. The demo follows
each worker's log for the lines a worker writes at the default level (see
:mod:`streams.workers.logs`) and shows the stage each worker has reached. The demo streams once
both are ready, so that its timings measure the pipeline, not the start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["STAGES", "LogFollower", "Stage", "stage_of"]


@dataclass(frozen=True)
class Stage:
    """A step of a worker's start-up, recognised by a line of its log."""

    pattern: re.Pattern[str]
    text: str
    """What the live view says once the line is seen (``{0}``: the pattern's group, if any)."""
    ready: bool = False
    """Whether the worker takes events from this stage on."""


#: Per worker command, its start-up stages in order (a later one implies the earlier ones).
STAGES: dict[str, tuple[Stage, ...]] = {
    "worker": (
        Stage(re.compile(r"ready: group"), "joined its consumer group, waiting for partitions"),
        Stage(re.compile(r"assigned partitions \[([^\]]*)\]"), "owns partitions {0}", ready=True),
        Stage(re.compile(r"claimed \S+\[\d+\]"), "learning"),
    ),
    "score": (
        Stage(re.compile(r"ready: group"), "joined its consumer group, reading the registry"),
        Stage(
            re.compile(r"registry read up to its end"),
            "read the registry, waiting for a version",
            ready=True,
        ),
        # "sea: v3 now serving (...)"; earlier workers wrote "sea: now serving v3 (...)".
        Stage(re.compile(r"\bv(\d+) now serving|now serving v(\d+)"), "serving v{0}", ready=True),
    ),
}


def stage_of(command: str, lines: list[str]) -> tuple[str, bool]:
    """What ``lines`` of a ``command`` worker's log say of its start-up: (text, ready).

    >>> stage_of("worker", ["[..] [INFO] ready: group g, consuming t"])
    ('joined its consumer group, waiting for partitions', False)
    >>> stage_of("worker", ["ready: group g", "assigned partitions [0, 1] of t"])
    ('owns partitions 0, 1', True)
    >>> stage_of("score", [])
    ('starting', False)
    """
    text, ready = "starting", False
    for line in lines:
        for stage in STAGES[command]:
            found = stage.pattern.search(line)
            if found:
                groups = [group for group in found.groups() if group is not None]
                text, ready = stage.text.format(*groups), stage.ready or ready
    return text, ready


class LogFollower:
    """Reads what a worker's log gained since the last call, and its start-up stage."""

    def __init__(self, command: str, path: Path) -> None:
        self.command = command
        self.path = path
        self._offset = 0
        self._partial = ""
        self._lines: list[str] = []

    def stage(self) -> tuple[str, bool]:
        """The worker's start-up stage so far: (what to show, whether it takes events)."""
        try:
            with open(self.path, "rb") as log:
                log.seek(self._offset)
                chunk = log.read()
        except OSError:
            chunk = b""
        self._offset += len(chunk)
        # A line half-written when read is completed by the next read.
        *complete, self._partial = (self._partial + chunk.decode("utf-8", "replace")).split("\n")
        # Only start-up lines matter, and they are few: keep those, not the whole log.
        self._lines += [line for line in complete if _is_stage_line(self.command, line)]
        return stage_of(self.command, self._lines)


def _is_stage_line(command: str, line: str) -> bool:
    return any(stage.pattern.search(line) for stage in STAGES[command])
