"""The demo's report: the summary of a run, as terminal tables, as markdown, and as a plot.

Pure: everything here works from plain metric records and registry records (an
:class:`~streams.cli.demo.watcher.Observation`), so it is tested without Kafka.

Predictions are counted per version twice, because the two counts answer different questions:
by the version that was serving when the demo produced each event (what a scorer that keeps up
would have served it with: :func:`served_when_produced`), and by the version that actually
scored it (the prediction record's; how far the scorer lags behind shows here).
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table

from streams.cli.demo.options import DemoOptions
from streams.cli.demo.watcher import Observation
from streams.registry.client import LiveReport
from streams.registry.records import TRIAL_KINDS, ModelVersion, RecordKind, serving_state
from streams.sdk.outcomes import OutcomeCounts

if TYPE_CHECKING:
    # matplotlib is imported when a plot is drawn, not when the report is.
    from matplotlib.typing import ColorType

__all__ = [
    "PLOT_NAME",
    "SUMMARY_NAME",
    "CandidateResult",
    "DelayedLabels",
    "DemoSummary",
    "TrialResult",
    "accuracy_text",
    "build_summary",
    "latest_live",
    "live_curves",
    "plot_live_accuracy",
    "plot_rolling_accuracy",
    "promotion_event",
    "served_when_produced",
    "summary_markdown",
    "summary_tables",
    "trial_results",
]

PLOT_NAME = "rolling_accuracy.png"
SUMMARY_NAME = "summary.md"


@dataclass(frozen=True)
class CandidateResult:
    """One candidate at the end of the run, from the last metrics report."""

    name: str
    rolling_accuracy: float | None
    cumulative_accuracy: float | None
    events: int


@dataclass(frozen=True)
class TrialResult:
    """A canary or shadow trial found in the registry, and how it ended."""

    record: ModelVersion
    started: float
    """Seconds from the first event sent to the trial's record."""
    ended_by: ModelVersion | None = None
    ended: float | None = None
    """Seconds from the first event sent to the record that ended the trial."""


@dataclass(frozen=True)
class DelayedLabels:
    """What a ``--delayed-labels`` run adds to the summary."""

    warmup: int
    """Labeled events sent before every label went through the join."""
    outcomes: OutcomeCounts
    live: list[LiveReport]
    """The last live report of each served (version, arm)."""
    trials: list[TrialResult]
    expired: int = 0
    """Predictions whose outcome never came within the label horizon."""
    unmatched: int = 0
    """Outcomes past the horizon without a prediction."""


@dataclass(frozen=True)
class DemoSummary:
    """The outcome of a demo run."""

    model: str
    events: int
    drift_at: int
    rate: float | None
    seed: int
    learned: int
    scored: int
    champion: str | None
    champion_version: int | None
    candidates: list[CandidateResult]
    versions: list[ModelVersion]
    predictions_by_version: dict[int, int]
    """Predictions per version that made them (includes the scorer's lag)."""
    served_when_produced: dict[int | None, int]
    """Scored events per version serving when each was produced (``None``: before the first)."""
    startup_seconds: float
    pipeline_seconds: float
    total_seconds: float
    missing: list[str] = field(default_factory=list)
    delayed: DelayedLabels | None = None


def latest_live(reports: Sequence[LiveReport]) -> dict[tuple[int, str], LiveReport]:
    """The last of ``reports`` (in the order read) of each served (version, arm), sorted."""
    latest = {(report.version, report.arm): report for report in reports}
    return dict(sorted(latest.items()))


def trial_results(
    versions: Sequence[ModelVersion], published_at: Sequence[float], *, origin: float
) -> list[TrialResult]:
    """Every trial of ``versions`` (one model's registry records in log order, published at
    ``published_at``) and the record that ended it: the next one that is not an ``alert``
    (a rollout, a rollback, a promotion or another trial). Times in seconds from ``origin``."""
    results = []
    for index, record in enumerate(versions):
        if record.kind not in TRIAL_KINDS:
            continue
        end = next(
            (
                i
                for i in range(index + 1, len(versions))
                if versions[i].kind is not RecordKind.ALERT
            ),
            None,
        )
        results.append(
            TrialResult(
                record,
                started=published_at[index] - origin,
                ended_by=None if end is None else versions[end],
                ended=None if end is None else published_at[end] - origin,
            )
        )
    return results


def promotion_event(record: ModelVersion) -> int:
    """The event index a version was promoted at: the offset after the last event it saw."""
    return int(record.lineage["last_offset"]) + 1


def served_when_produced(
    produced_at: Mapping[str, float],
    scored: Collection[str],
    versions: Sequence[ModelVersion],
    published_at: Sequence[float],
) -> dict[int | None, int]:
    """Scored events per version that was serving (stable) when each event was produced.

    ``produced_at`` maps event ids to when the demo sent them; ``published_at`` holds when each
    of ``versions`` (registry records in log order, one model) was published, on the same clock.
    Events produced before any version count under ``None``.
    """
    # The records published by a moment are a prefix of the log: a running maximum of their
    # timestamps keeps the prefix well defined however the clocks of two writers differ.
    published_by = list(itertools.accumulate(published_at, max))
    serving: list[int | None] = [None]
    for count in range(1, len(versions) + 1):
        states = list(serving_state(versions[:count]).values())
        serving.append(states[0].stable.version if states else None)
    counts: Counter[int | None] = Counter(
        serving[bisect.bisect_right(published_by, produced_at[event_id])]
        for event_id in scored
        if event_id in produced_at
    )
    return dict(sorted(counts.items(), key=lambda item: -1 if item[0] is None else item[0]))


def build_summary(
    observation: Observation,
    *,
    model: str,
    options: DemoOptions,
    produced_at: Mapping[str, float],
    scored_ids: Collection[str],
    startup_seconds: float,
    pipeline_seconds: float,
    total_seconds: float,
    missing: Sequence[str] = (),
    delayed: DelayedLabels | None = None,
) -> DemoSummary:
    """Summarise a run from what the topics held at its end.

    ``produced_at`` maps each event id to when it was sent (epoch seconds) and ``scored_ids``
    holds the ids of the events scored: they count predictions by the version serving when each
    event was produced. ``delayed`` is what a ``--delayed-labels`` run adds.
    """
    latest = observation.latest or {}
    candidates = [
        CandidateResult(
            name=name,
            rolling_accuracy=scores["rolling"].get("accuracy"),
            cumulative_accuracy=scores["cumulative"].get("accuracy"),
            events=scores["n"],
        )
        for name, scores in latest.get("candidates", {}).items()
    ]
    return DemoSummary(
        model=model,
        events=options.events,
        drift_at=options.drift_index,
        rate=options.rate,
        seed=options.seed,
        learned=observation.learned,
        scored=observation.scored,
        champion=latest.get("champion"),
        champion_version=latest.get("version"),
        candidates=candidates,
        versions=list(observation.versions),
        predictions_by_version=dict(sorted(observation.predictions_by_version.items())),
        served_when_produced=served_when_produced(
            produced_at, scored_ids, observation.versions, observation.published_at
        ),
        startup_seconds=startup_seconds,
        pipeline_seconds=pipeline_seconds,
        total_seconds=total_seconds,
        missing=list(missing),
        delayed=delayed,
    )


def accuracy_text(value: float | None) -> str:
    """An accuracy as the report and the live view print it: four decimals, ``-`` when none."""
    return "-" if value is None else f"{value:.4f}"


def _p_value(record: ModelVersion) -> str:
    p_value = record.evidence.get("p_value")
    return "-" if p_value is None else f"{p_value:.3g}"


def _window(record: ModelVersion) -> str:
    window = record.evidence.get("window")
    return f"{window[0]:,}-{window[1]:,}" if window else "-"


def _rate(rate: float | None) -> str:
    return "as fast as possible" if not rate else f"{rate:,.0f} events/s"


def _rows(summary: DemoSummary) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The summary's tables as (header, rows), shared by the terminal and the markdown."""
    return {
        "Candidates": (
            ["candidate", "rolling accuracy", "cumulative accuracy", "events learned"],
            [
                [
                    c.name + (" (champion)" if c.name == summary.champion else ""),
                    accuracy_text(c.rolling_accuracy),
                    accuracy_text(c.cumulative_accuracy),
                    f"{c.events:,}",
                ]
                for c in summary.candidates
            ],
        ),
        "Versions published": (
            ["version", "candidate", "kind", "at event", "evidence window", "p-value"],
            [
                [
                    f"v{r.version}",
                    str(r.candidate.get("name")),
                    r.kind,
                    f"{promotion_event(r):,}",
                    _window(r),
                    _p_value(r),
                ]
                for r in summary.versions
            ],
        ),
        "Predictions per version": (
            ["version", "serving when the event was produced", "scored by it"],
            _prediction_rows(summary),
        ),
        **(_delayed_rows(summary.delayed) if summary.delayed else {}),
    }


def _delayed_rows(delayed: DelayedLabels) -> dict[str, tuple[list[str], list[list[str]]]]:
    return {
        LIVE_TITLE: (
            ["version", "arm", "served", "outcomes joined", "rolling accuracy", "cumulative"],
            [
                [
                    f"v{r.version}",
                    r.arm,
                    f"{r.served:,}",
                    f"{r.joined:,}",
                    accuracy_text(r.metric("accuracy", "rolling")),
                    accuracy_text(r.metric("accuracy")),
                ]
                for r in delayed.live
            ],
        ),
        TRIALS_TITLE: (
            [
                "trial",
                "fraction",
                "started (s)",
                "ended by",
                "after (s)",
                "outcomes c/s",
                "loss c-s",
            ],
            [_trial_row(trial) for trial in delayed.trials],
        ),
    }


LIVE_TITLE = "Live accuracy per served version and arm"
TRIALS_TITLE = "Trials"


def _trial_row(trial: TrialResult) -> list[str]:
    record, end = trial.record, trial.ended_by
    ended = (
        "-"
        if end is None
        else f"{end.kind} of v{end.version}" + (f" by {end.operator}" if end.operator else "")
    )
    evidence = end.evidence if end is not None else {}
    counts = f"{evidence['n_canary']:,}/{evidence['n_stable']:,}" if "n_canary" in evidence else "-"
    difference = evidence.get("difference")
    bounds = (
        f"{difference:+.3f} [{evidence['lower']:+.3f}, {evidence['upper']:+.3f}]"
        if isinstance(difference, float)
        else "-"
    )
    return [
        f"v{record.version} {record.kind}",
        f"{(record.rollout or {}).get('fraction', 0):.0%}",
        f"{trial.started:.1f}",
        ended,
        "running" if trial.ended is None else f"{trial.ended - trial.started:.1f}",
        counts,
        bounds,
    ]


def _prediction_rows(summary: DemoSummary) -> list[list[str]]:
    served, scored = summary.served_when_produced, summary.predictions_by_version
    rows = [["none yet", f"{served[None]:,}", "-"]] if served.get(None) else []
    for version in sorted({v for v in served if v is not None} | set(scored)):
        rows.append([f"v{version}", f"{served.get(version, 0):,}", f"{scored.get(version, 0):,}"])
    return rows


#: Under the predictions table: what its two counts mean.
PREDICTIONS_NOTE = (
    "Serving when the event was produced: the version the registry served when the demo sent "
    "the event, what a scorer that keeps up scores it with. Scored by it: the version in the "
    "prediction record, which includes the scorer's lag (a scorer behind the stream scores "
    "events with the version serving when it reaches them)."
)


def _headline(summary: DemoSummary) -> str:
    return _labels_line(summary) + (
        f"{summary.events:,} events of {summary.model!r} (concept drift at "
        f"{summary.drift_at:,}), {_rate(summary.rate)}, seed {summary.seed}: "
        f"{summary.learned:,} learned, {summary.scored:,} scored. Champion at the end: "
        f"{summary.champion} (v{summary.champion_version}). Workers ready in "
        f"{summary.startup_seconds:.1f} s; first event to last prediction "
        f"{summary.pipeline_seconds:.1f} s; whole demo {summary.total_seconds:.1f} s."
    )


def _labels_line(summary: DemoSummary) -> str:
    delayed = summary.delayed
    if delayed is None:
        return ""
    counts, reports = delayed.outcomes, delayed.live
    return (
        f"Delayed labels: {delayed.warmup:,} labeled warm-up events (v1 learned from them), "
        f"then labels only as outcomes joined by the scorer: {counts.outcomes:,} outcomes sent "
        f"({counts.before:,} before their event, {counts.missing:,} never), "
        f"{sum(r.joined for r in reports):,} joined, {delayed.expired:,} predictions "
        f"expired, {delayed.unmatched:,} outcomes unmatched. "
    )


def _reasons(summary: DemoSummary) -> list[str]:
    # Too long for a table column: one line per version, under the table.
    return [f"v{r.version}: {r.reason}" for r in summary.versions]


def summary_tables(summary: DemoSummary) -> Group:
    """The summary for the terminal."""
    parts: list[Any] = [_headline(summary)]
    for title, (header, rows) in _rows(summary).items():
        table = Table(title=title, title_justify="left")
        for column in header:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        parts.append(table)
        if title == "Versions published":
            parts.extend(_reasons(summary))
        if title == "Predictions per version":
            parts.append(PREDICTIONS_NOTE)
    parts.extend(f"[red]missing: {line}[/red]" for line in summary.missing)
    return Group(*parts)


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(summary: DemoSummary, *, plot_name: str = PLOT_NAME) -> str:
    """The summary as a markdown document that embeds the rolling-accuracy plot."""
    lines = [
        f"# driftline demo: {summary.model}",
        "",
        _headline(summary),
        "",
        f"![Rolling accuracy of each candidate]({plot_name})",
    ]
    if summary.missing:
        lines += ["", "## Missing", "", *(f"- {line}" for line in summary.missing)]
    for title, (header, rows) in _rows(summary).items():
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in rows]
        if title == "Versions published":
            lines += ["", *(f"- {reason}" for reason in _reasons(summary))]
        if title == "Predictions per version":
            lines += ["", PREDICTIONS_NOTE]
    return "\n".join(lines) + "\n"


def plot_rolling_accuracy(
    metrics: Sequence[Mapping[str, Any]],
    versions: Sequence[ModelVersion],
    *,
    drift_at: int,
    path: Path,
) -> Path:
    """Each candidate's rolling accuracy over the event index, with the drift and promotions."""
    plt = _pyplot()

    curves: dict[str, tuple[list[int], list[float]]] = {}
    for report in metrics:
        # The offset of the report's last event, +1: the number of events before it, like
        # promotion_event (the demo's labeled topic is fresh, so offsets count from 0).
        event = int(report["offset"]) + 1
        for name, scores in report["candidates"].items():
            accuracy = scores["rolling"].get("accuracy")
            if accuracy is not None:
                xs, ys = curves.setdefault(name, ([], []))
                xs.append(event)
                ys.append(accuracy)

    figure, axes = plt.subplots(figsize=(10, 5.2), dpi=120)
    colors: dict[str, ColorType] = {}
    for name, (xs, ys) in curves.items():
        (line,) = axes.plot(xs, ys, label=name, linewidth=1.8)
        colors[name] = line.get_color()
    axes.axvline(drift_at, color="black", linestyle="--", linewidth=1.2, label="concept drift")
    last_event = max([xs[-1] for xs, _ in curves.values()], default=drift_at)
    promotions = sorted(versions, key=promotion_event)
    for index, record in enumerate(promotions):
        at = promotion_event(record)
        name = str(record.candidate.get("name"))
        color = colors.get(name, "tab:red")
        # Shade the span this version served (until the next promotion) in its candidate's color.
        following = promotions[index + 1] if index + 1 < len(promotions) else None
        until = promotion_event(following) if following else last_event
        axes.axvspan(at, max(at, until), color=color, alpha=0.07, linewidth=0)
        axes.axvline(at, color=color, linestyle=":", linewidth=1.4)
        _label_version(axes, at, f"v{record.version} {name}", color=color, fontsize=9)
    model = metrics[-1]["model"] if metrics else ""
    axes.set_title(f"{model}: rolling accuracy of each candidate (prequential)")
    axes.set_xlabel("event index")
    axes.set_ylabel("rolling accuracy")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", title="shaded: the serving version")
    return _save(figure, path)


#: How each arm's live curve is drawn: the version gives the color, the arm the line style.
_ARM_STYLES = {"stable": "-", "canary": "--", "shadow": ":"}
#: Colors of the versions' live curves: none of those the registry records' lines use.
_VERSION_COLORS = ("tab:blue", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def plot_live_accuracy(
    observation: Observation,
    *,
    origin: float,
    drift_sent_at: float | None,
    path: Path,
) -> Path:
    """Two panels on one time axis (seconds from ``origin``, the first event sent): the
    trainer's rolling accuracy per candidate (prequential, when each report was published),
    and the scorer's live rolling accuracy per served (version, arm), from joined outcomes.
    Each registry record is a vertical line in both; the concept switch, when it was sent."""
    plt = _pyplot()
    figure, (trainer_axes, live_axes) = plt.subplots(2, 1, figsize=(10, 7.5), dpi=120, sharex=True)
    for name, (xs, ys) in _trainer_curves(observation, origin).items():
        trainer_axes.plot(xs, ys, label=name, linewidth=1.8)
    live = live_curves(observation.live, origin)
    for (version, arm), (xs, ys) in live.items():
        live_axes.plot(
            xs,
            ys,
            linestyle=_ARM_STYLES.get(arm, "-."),
            color=_VERSION_COLORS[version % len(_VERSION_COLORS)],
            linewidth=1.8,
            label=f"v{version} {arm}",
        )
    for axes in (trainer_axes, live_axes):
        if drift_sent_at is not None:
            axes.axvline(drift_sent_at - origin, color="black", linestyle="--", linewidth=1.2)
        for record, at in zip(observation.versions, observation.published_at, strict=True):
            axes.axvline(at - origin, color=_record_color(record), linestyle=":", linewidth=1.2)
        axes.grid(alpha=0.3)
    for record, at in zip(observation.versions, observation.published_at, strict=True):
        label = f"v{record.version} {record.kind}"
        _label_version(live_axes, at - origin, label, color=_record_color(record), fontsize=8)
    model = observation.metrics[-1]["model"] if observation.metrics else ""
    trainer_axes.set_title(f"{model}: the trainer's rolling accuracy per candidate (prequential)")
    trainer_axes.set_ylabel("rolling accuracy")
    trainer_axes.legend(loc="lower right", title="dashed black: the concept switch sent")
    live_axes.set_title("live rolling accuracy per served version and arm (joined outcomes)")
    live_axes.set_ylabel("live rolling accuracy")
    live_axes.set_xlabel("seconds since the first event was sent")
    if live:
        live_axes.legend(loc="lower right", title="dotted: registry records")
    return _save(figure, path)


def live_curves(
    reports: Sequence[LiveReport], origin: float
) -> dict[tuple[int, str], tuple[list[float], list[float]]]:
    """Per served (version, arm), its live rolling accuracy over time (seconds from
    ``origin``): one point per report that joined new outcomes, so that a version that stopped
    serving ends where its last outcome was joined (the scorer keeps reporting it)."""
    curves: dict[tuple[int, str], tuple[list[float], list[float]]] = {}
    joined: dict[tuple[int, str], int] = {}
    for report in reports:
        key = (report.version, report.arm)
        accuracy = report.metric("accuracy", "rolling")
        if accuracy is None or report.ts is None or joined.get(key) == report.joined:
            continue
        joined[key] = report.joined
        xs, ys = curves.setdefault(key, ([], []))
        xs.append(report.ts - origin)
        ys.append(accuracy)
    return dict(sorted(curves.items()))


def _trainer_curves(
    observation: Observation, origin: float
) -> dict[str, tuple[list[float], list[float]]]:
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for report, at in zip(observation.metrics, observation.metrics_at, strict=True):
        for name, scores in report["candidates"].items():
            accuracy = scores["rolling"].get("accuracy")
            if accuracy is not None:
                xs, ys = curves.setdefault(name, ([], []))
                xs.append(at - origin)
                ys.append(accuracy)
    return curves


def _record_color(record: ModelVersion) -> str:
    # What a record does to traffic, at a glance: a trial starts, ends well, ends badly.
    return {
        RecordKind.CANARY: "tab:orange",
        RecordKind.SHADOW: "tab:orange",
        RecordKind.ROLLOUT: "tab:green",
        RecordKind.ROLLBACK: "tab:red",
    }.get(record.kind, "tab:gray")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: the plot only goes to a file
    from matplotlib import pyplot

    return pyplot


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    _pyplot().close(figure)
    return path


def _label_version(axes: Any, at: float, text: str, *, color: Any, fontsize: int) -> None:
    """Write ``text`` up the foot of the vertical line at ``at`` that marks a version."""
    axes.annotate(
        text,
        xy=(at, 0.0),
        xycoords=("data", "axes fraction"),
        xytext=(3, 4),
        textcoords="offset points",
        rotation=90,
        va="bottom",
        ha="left",
        fontsize=fontsize,
        color=color,
    )
