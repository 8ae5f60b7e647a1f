"""The demo's report: the summary of a run, as terminal tables, as markdown, and as a plot.

Pure: everything here works from plain metric records and registry records (an
:class:`~streams.cli.demo.watcher.Observation`), so it is tested without Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table

from streams.cli.demo.options import DemoOptions
from streams.cli.demo.watcher import Observation
from streams.registry.records import ModelVersion

if TYPE_CHECKING:
    # matplotlib is imported when a plot is drawn, not when the report is.
    from matplotlib.typing import ColorType

__all__ = [
    "PLOT_NAME",
    "SUMMARY_NAME",
    "CandidateResult",
    "DemoSummary",
    "accuracy_text",
    "build_summary",
    "plot_rolling_accuracy",
    "promotion_event",
    "summary_markdown",
    "summary_tables",
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
    pipeline_seconds: float
    total_seconds: float
    missing: list[str] = field(default_factory=list)


def promotion_event(record: ModelVersion) -> int:
    """The event index a version was promoted at: the offset after the last event it saw."""
    return int(record.lineage["last_offset"]) + 1


def build_summary(
    observation: Observation,
    *,
    model: str,
    options: DemoOptions,
    pipeline_seconds: float,
    total_seconds: float,
    missing: Sequence[str] = (),
) -> DemoSummary:
    """Summarise a run from what the topics held at its end."""
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
        pipeline_seconds=pipeline_seconds,
        total_seconds=total_seconds,
        missing=list(missing),
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
            ["version", "predictions"],
            [[f"v{v}", f"{n:,}"] for v, n in summary.predictions_by_version.items()],
        ),
    }


def _headline(summary: DemoSummary) -> str:
    return (
        f"{summary.events:,} events of {summary.model!r} (concept drift at "
        f"{summary.drift_at:,}), {_rate(summary.rate)}, seed {summary.seed}: "
        f"{summary.learned:,} learned, {summary.scored:,} scored. Champion at the end: "
        f"{summary.champion} (v{summary.champion_version}). First event to last prediction "
        f"{summary.pipeline_seconds:.1f} s; whole demo {summary.total_seconds:.1f} s."
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
    return "\n".join(lines) + "\n"


def plot_rolling_accuracy(
    metrics: Sequence[Mapping[str, Any]],
    versions: Sequence[ModelVersion],
    *,
    drift_at: int,
    path: Path,
) -> Path:
    """Each candidate's rolling accuracy over the event index, with the drift and promotions."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the plot only goes to a file
    from matplotlib import pyplot as plt

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
        axes.annotate(
            f"v{record.version} {name}",
            xy=(at, 0.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, 4),
            textcoords="offset points",
            rotation=90,
            va="bottom",
            ha="left",
            fontsize=9,
            color=color,
        )
    model = metrics[-1]["model"] if metrics else ""
    axes.set_title(f"{model}: rolling accuracy of each candidate (prequential)")
    axes.set_xlabel("event index")
    axes.set_ylabel("rolling accuracy")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", title="shaded: the serving version")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
