"""The demo's live view shows each worker's start-up, read from the lines of its log."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from streams.cli.demo.live import STARTING, LiveState, live_view
from streams.cli.demo.startup import LogFollower, stage_of
from streams.cli.demo.watcher import Observation

TRAINER_LOG = [
    "[2026-11-26 19:56:04,890] [1] [INFO] ready: group demo-trainer, consuming demo.events.labeled",
    "[2026-11-26 19:56:04,892] [1] [INFO] assigned partitions [0, 1, 2, 3] of demo.events.labeled",
    "[2026-11-26 19:56:05,634] [1] [INFO] registry read to its end: 0 models serving",
    "[2026-11-26 19:56:05,758] [1] [INFO] claimed demo.events.labeled[0] (epoch 1): resuming",
]
SCORER_LOG = [
    "[2026-11-26 19:56:05,341] [2] [INFO] ready: group demo-scorer, consuming demo.events.outcomes",
    "[2026-11-26 19:56:05,401] [2] [INFO] registry read up to its end; scoring can start",
    "[2026-11-26 19:56:05,894] [2] [INFO] sea: v1 now serving (initial: configured champion)",
]


def test_each_stage_of_the_trainer_is_named_and_it_is_ready_once_it_owns_partitions() -> None:
    stages = [stage_of("worker", TRAINER_LOG[:n]) for n in range(len(TRAINER_LOG) + 1)]
    assert stages == [
        ("starting", False),
        ("joined its consumer group, waiting for partitions", False),
        ("owns partitions 0, 1, 2, 3", True),
        ("owns partitions 0, 1, 2, 3", True),
        ("learning", True),
    ]


def test_the_scorer_is_ready_once_it_has_read_the_registry() -> None:
    assert stage_of("score", SCORER_LOG[:1]) == (
        "joined its consumer group, reading the registry",
        False,
    )
    assert stage_of("score", SCORER_LOG[:2]) == ("read the registry, waiting for a version", True)
    assert stage_of("score", SCORER_LOG) == ("serving v1", True)
    assert stage_of("score", ["sea: now serving v4 (challenger)"]) == ("serving v4", True)


def test_the_follower_reads_what_the_log_gained_and_completes_half_written_lines(
    tmp_path: Path,
) -> None:
    log = tmp_path / "trainer.log"
    follower = LogFollower("worker", log)
    assert follower.stage() == ("starting", False)  # no log yet
    first, second = TRAINER_LOG[0] + "\n", TRAINER_LOG[1] + "\n"
    log.write_text(first + second[:30])
    assert follower.stage() == ("joined its consumer group, waiting for partitions", False)
    with open(log, "a") as handle:
        handle.write(second[30:])
    assert follower.stage() == ("owns partitions 0, 1, 2, 3", True)


def render(state: LiveState, observation: Observation) -> str:
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(live_view(state, observation))
    return console.export_text()


def test_the_live_view_shows_the_start_up_then_why_nothing_is_learned_yet() -> None:
    state = LiveState(events=1000, metric="accuracy", report_every=500)
    assert state.phase == STARTING
    state.workers["trainer worker"] = "joined its consumer group, waiting for partitions"
    text = render(state, Observation())
    assert "driftline demo: starting the workers" in text
    assert "trainer worker" in text and "waiting for partitions" in text
    assert "events learned" not in text

    state.phase, state.sent = "streaming events", 200
    text = render(state, Observation())
    assert "waiting for the trainer's first report (it reports every 500 events)" in text
