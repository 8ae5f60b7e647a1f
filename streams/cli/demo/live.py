"""The demo's live view: what the terminal shows while events stream and the workers catch up.

Each candidate's rolling primary metric (:attr:`LiveState.metric`), what serves, the predictions
scored, and one line per registry record of any kind (promotions, trials, drift detections,
drift actions, alerts) with its reason.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table

from streams.cli.demo.report import event_text, latest_live, metric_text
from streams.cli.demo.watcher import Observation
from streams.registry.records import NOTICE_KINDS

if TYPE_CHECKING:
    from streams.cli.demo.delayed import TrialDirector
    from streams.sdk.outcomes import OutcomeCounts

__all__ = ["REFRESH_PER_SECOND", "STARTING", "LiveState", "RateMeter", "live_table", "live_view"]

#: Frames per second of the live view.
REFRESH_PER_SECOND = 4
#: The first phase: the workers start, and nothing is sent yet.
STARTING = "starting the workers"


class RateMeter:
    """Events per second over the last few seconds of a growing count."""

    def __init__(self, span: float = 3.0) -> None:
        self.span = span
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, count: int, now: float | None = None) -> float:
        """Record ``count`` at ``now`` (default: the monotonic clock); the rate over the span."""
        now = time.monotonic() if now is None else now
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.span:
            self._samples.popleft()
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


@dataclass
class LiveState:
    """What the main thread does, for the live view (read by rich's refresh thread)."""

    events: int
    metric: str
    """The model's primary metric: the one the view shows."""
    report_every: int = 0
    """Events between two metrics reports of the trainer: "learned" moves by this much."""
    sent: int = 0
    phase: str = STARTING
    workers: dict[str, str] = field(default_factory=dict)
    """Each worker's start-up stage, by name, while :attr:`phase` is :data:`STARTING`."""
    streamed_seconds: float | None = None
    """How long streaming took, once it is over."""
    sent_rate: RateMeter = field(default_factory=RateMeter)
    learned_rate: RateMeter = field(default_factory=RateMeter)
    note: str | None = None
    """A line the view shows above everything (the settings a mode changed)."""
    outcomes: OutcomeCounts | None = None
    """With delayed labels: what the outcome scheduler has sent."""
    director: TrialDirector | None = None
    """With delayed labels: the trials the demo runs."""


def live_view(state: LiveState, observation: Observation) -> Group:
    """The table the terminal shows while the demo runs."""
    latest = observation.latest or {}
    status = Table(title=f"driftline demo: {state.phase}", title_justify="left", show_header=False)
    status.add_column(style="bold")
    status.add_column()
    if state.phase == STARTING:
        for name, stage in (state.workers or {"workers": "starting"}).items():
            status.add_row(name, stage)
        return Group(status)
    if state.streamed_seconds is None:
        pace = f"{state.sent_rate.update(state.sent):,.0f}/s"
    else:
        pace = f"in {state.streamed_seconds:.1f} s"
    status.add_row("events sent", f"{state.sent:,} / {state.events:,}  ({pace})")
    status.add_row("events learned", _learned(state, observation))
    for name, scores in latest.get("candidates", {}).items():
        value = metric_text(scores["rolling"].get(state.metric))
        status.add_row(f"  {name}", f"rolling {state.metric} {value}")
    if latest:
        status.add_row("champion", f"{latest.get('champion')} (v{latest.get('version')})")
    by_version = ", ".join(
        f"v{v}: {n:,}" for v, n in sorted(observation.predictions_by_version.items())
    )
    status.add_row("predictions scored", f"{observation.scored:,}  {by_version}")
    if state.outcomes is not None:
        counts = state.outcomes
        status.add_row(
            "outcomes sent",
            f"{counts.outcomes:,}  ({counts.before:,} before their event, "
            f"{counts.missing:,} never)",
        )
    if state.director is not None:
        status.add_row("trials", state.director.summary())
    parts: list[Table | str] = [state.note] if state.note else []
    parts.append(status)
    if observation.live:
        parts.append(live_table(observation, state.metric))
    records = Table(title="registry records", title_justify="left")
    for column in ("version", "kind", "candidate", "at event", "reason"):
        records.add_column(column, overflow="fold")
    for record in observation.versions:
        records.add_row(
            # A notice repeats the version that served when it was made: it is not one's record.
            "-" if record.kind in NOTICE_KINDS else f"v{record.version}",
            record.kind,
            str(record.candidate.get("name", "-")),
            event_text(record),
            record.reason,
        )
    return Group(*parts, records)


def live_table(observation: Observation, metric: str) -> Table:
    """The scorer's live ``metric`` per served (version, arm), from its last report of each."""
    table = Table(
        title=f"live {metric} per served version (the scorer's join)", title_justify="left"
    )
    for column in ("version", "arm", "served", "outcomes joined", "rolling", "cumulative"):
        table.add_column(column)
    for (version, arm), report in latest_live(observation.live).items():
        table.add_row(
            f"v{version}",
            arm,
            f"{report.served:,}",
            f"{report.joined:,}",
            metric_text(report.metric(metric, "rolling")),
            metric_text(report.metric(metric)),
        )
    return table


def _learned(state: LiveState, observation: Observation) -> str:
    rate = state.learned_rate.update(observation.learned)
    if observation.metrics or not state.sent:
        return f"{observation.learned:,}  ({rate:,.0f}/s)"
    # Zero until the trainer's first report, however many it has learned: say why.
    every = f" (it reports every {state.report_every:,} events)" if state.report_every else ""
    return f"waiting for the trainer's first report{every}"
