"""The demo's report: the summary of a run, as terminal tables, as markdown, and as a plot.

Pure: everything here works from plain metric records and registry records (an
:class:`~streams.cli.demo.watcher.Observation`), so it is tested without Kafka.

Every number and curve is the model's primary metric (its policy's ``metric``: accuracy for the
SEA example, MAE for the regression one), named as such in titles, headers and the plot's file
name (:func:`plot_name`). Registry records are split by what they do: the ones that change what
serves (:func:`changes_serving`: new versions, trials, rollouts, rollbacks) are the versions
published; the informational ones (a trainer's drift and action notices, alerts) are listed
with their reasons and marked on the plot at their event, the notices of one event on one line.

Predictions are counted per version twice, because the two counts answer different questions:
by the version that was serving when the demo produced each event (what a scorer that keeps up
would have served it with: :func:`served_when_produced`), and by the version that actually
scored it (the prediction record's; how far the scorer lags behind shows here).
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table

from streams.cli.demo.options import DemoOptions
from streams.cli.demo.watcher import Observation
from streams.registry.client import LiveReport
from streams.registry.records import (
    INFORMATIONAL_KINDS,
    TRIAL_KINDS,
    ModelVersion,
    RecordKind,
    serving_state,
)
from streams.sdk.outcomes import OutcomeCounts
from trainers.metrics import HIGHER_IS_BETTER

if TYPE_CHECKING:
    # matplotlib is imported when a plot is drawn, not when the report is.
    from matplotlib.typing import ColorType

__all__ = [
    "SUMMARY_NAME",
    "CandidateResult",
    "DelayedLabels",
    "DemoSummary",
    "TrialResult",
    "build_summary",
    "changes_serving",
    "event_text",
    "latest_live",
    "live_curves",
    "live_title",
    "metric_text",
    "plot_live_metric",
    "plot_name",
    "plot_rolling_metric",
    "record_event",
    "served_when_produced",
    "summary_markdown",
    "summary_tables",
    "trial_end_index",
    "trial_results",
]

SUMMARY_NAME = "summary.md"


def plot_name(metric: str) -> str:
    """The plot's file name for a model whose primary metric is ``metric``.

    >>> plot_name("accuracy"), plot_name("mae")
    ('rolling_accuracy.png', 'rolling_mae.png')
    """
    return f"rolling_{metric}.png"


@dataclass(frozen=True)
class CandidateResult:
    """One candidate at the end of the run, from the last metrics report: its primary metric
    over the rolling window and over every event it learned."""

    name: str
    rolling: float | None
    cumulative: float | None
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
    metric: str
    """The model's primary metric: every number and curve of the report is this one."""
    stream: str
    """The drift stream sent (a :data:`trainers.synthetic.KINDS` name)."""
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
    """The registry records that changed what serves (see :func:`changes_serving`)."""
    notices: list[ModelVersion]
    """Every other registry record: alerts, drift detections, drift actions."""
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


def trial_end_index(versions: Sequence[ModelVersion], index: int) -> int | None:
    """The index of the record that ended the trial at ``versions[index]`` (registry records in
    log order): the next one that changes what serves (a rollout, a rollback, a promotion,
    another trial; not an alert or a notice), or None while it runs."""
    return next((i for i in range(index + 1, len(versions)) if changes_serving(versions[i])), None)


def trial_results(
    versions: Sequence[ModelVersion], published_at: Sequence[float], *, origin: float
) -> list[TrialResult]:
    """Every trial of ``versions`` (one model's registry records in log order, published at
    ``published_at``) and the record that ended it (:func:`trial_end_index`). Times in seconds
    from ``origin``."""
    results = []
    for index, record in enumerate(versions):
        if record.kind not in TRIAL_KINDS:
            continue
        end = trial_end_index(versions, index)
        results.append(
            TrialResult(
                record,
                started=published_at[index] - origin,
                ended_by=None if end is None else versions[end],
                ended=None if end is None else published_at[end] - origin,
            )
        )
    return results


def record_event(record: ModelVersion) -> int | None:
    """The event a registry record was made at: how many events the trainer had learned, as its
    lineage says (``events`` for a version, ``event`` for a notice; None for a record without,
    such as an operator's by hand).

    Counted in events learned, like the metrics reports the plot draws, and not from offsets:
    a record of the labeled topic may hold a batch of events, and with delayed labels the topic
    also holds the events the scorer's join wrote.
    """
    events = record.lineage.get("events", record.lineage.get("event"))
    return None if events is None else int(events)


def changes_serving(record: ModelVersion) -> bool:
    """Whether ``record`` changes what serves: a new version, a trial, a rollout, a rollback.

    The other kinds (:data:`~streams.registry.records.INFORMATIONAL_KINDS`: a trainer's drift
    and action notices, an alert) leave the serving version as it was.
    """
    return record.kind not in INFORMATIONAL_KINDS


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
    metric: str,
    stream: str,
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
    event was produced. ``metric`` is the model's primary metric, the one reported; ``stream``
    the drift stream sent.
    ``delayed`` is what a ``--delayed-labels`` run adds.
    """
    latest = observation.latest or {}
    candidates = [
        CandidateResult(
            name=name,
            rolling=scores["rolling"].get(metric),
            cumulative=scores["cumulative"].get(metric),
            events=scores["n"],
        )
        for name, scores in latest.get("candidates", {}).items()
    ]
    return DemoSummary(
        model=model,
        metric=metric,
        stream=stream,
        events=options.events,
        drift_at=options.drift_index,
        rate=options.rate,
        seed=options.seed,
        learned=observation.learned,
        scored=observation.scored,
        champion=latest.get("champion"),
        champion_version=latest.get("version"),
        candidates=candidates,
        versions=[record for record in observation.versions if changes_serving(record)],
        notices=[record for record in observation.versions if not changes_serving(record)],
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


def metric_text(value: float | None) -> str:
    """A metric's value as the report and the live view print it: four decimals, ``-`` when
    none.

    >>> metric_text(0.93), metric_text(2.5), metric_text(None)
    ('0.9300', '2.5000', '-')
    """
    return "-" if value is None else f"{value:.4f}"


def event_text(record: ModelVersion) -> str:
    """:func:`record_event` as the report and the live view print it (``-`` when none)."""
    at = record_event(record)
    return "-" if at is None else f"{at:,}"


def _test_text(record: ModelVersion) -> str:
    """The paired test that promoted a version: the anytime-valid bound on the mean loss
    difference and the alpha spent on it, or a fixed-sample test's p-value (older records)."""
    evidence = record.evidence
    if evidence.get("lower") is not None and evidence.get("alpha_spent") is not None:
        return (
            f"lower bound {evidence['lower']:.4f} > {evidence['threshold']:.4g} "
            f"at alpha {evidence['alpha_spent']:.3g}"
        )
    p_value = evidence.get("p_value")
    return "-" if p_value is None else f"p = {p_value:.3g}"


def _window(record: ModelVersion) -> str:
    window = record.evidence.get("window")
    return f"{window[0]:,}-{window[1]:,}" if window else "-"


def _rate(rate: float | None) -> str:
    return "as fast as possible" if not rate else f"{rate:,.0f} events/s"


def _rows(summary: DemoSummary) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The summary's tables as (header, rows), shared by the terminal and the markdown."""
    metric = summary.metric
    return {
        "Candidates": (
            ["candidate", f"rolling {metric}", f"cumulative {metric}", "events learned"],
            [
                [
                    c.name + (" (champion)" if c.name == summary.champion else ""),
                    metric_text(c.rolling),
                    metric_text(c.cumulative),
                    f"{c.events:,}",
                ]
                for c in summary.candidates
            ],
        ),
        "Versions published": (
            ["version", "candidate", "kind", "at event", "evidence window", "test"],
            [
                [
                    f"v{r.version}",
                    str(r.candidate.get("name")),
                    r.kind,
                    event_text(r),
                    _window(r),
                    _test_text(r),
                ]
                for r in summary.versions
            ],
        ),
        NOTICES_TITLE: (
            ["notice", "kind", "at event", "candidate", "reason"],
            [
                [
                    "-" if r.notice_sequence is None else f"#{r.notice_sequence}",
                    r.kind,
                    event_text(r),
                    str(r.candidate.get("name", "-")),
                    r.reason,
                ]
                for r in summary.notices
            ],
        ),
        "Predictions per version": (
            ["version", "serving when the event was produced", "scored by it"],
            _prediction_rows(summary),
        ),
        **(_delayed_rows(summary.delayed, metric) if summary.delayed else {}),
    }


def _delayed_rows(
    delayed: DelayedLabels, metric: str
) -> dict[str, tuple[list[str], list[list[str]]]]:
    return {
        live_title(metric): (
            ["version", "arm", "served", "outcomes joined", f"rolling {metric}", "cumulative"],
            [
                [
                    f"v{r.version}",
                    r.arm,
                    f"{r.served:,}",
                    f"{r.joined:,}",
                    metric_text(r.metric(metric, "rolling")),
                    metric_text(r.metric(metric)),
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


def live_title(metric: str) -> str:
    """The title of the scorer's live ``metric`` per served version and arm."""
    return f"Live {metric} per served version and arm"


NOTICES_TITLE = "Drift, actions and alerts"
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
        f"{summary.events:,} events of {summary.model!r} ({summary.stream} stream, concept "
        f"drift at {summary.drift_at:,}), {_rate(summary.rate)}, seed {summary.seed}: "
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


def summary_markdown(summary: DemoSummary, *, plot_file: str | None = None) -> str:
    """The summary as a markdown document that embeds the plot (``plot_file``, beside it;
    default: :func:`plot_name` of the summary's metric)."""
    lines = [
        f"# driftline demo: {summary.model}",
        "",
        _headline(summary),
        "",
        f"![Rolling {summary.metric} of each candidate]({plot_file or plot_name(summary.metric)})",
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


def plot_rolling_metric(
    metrics: Sequence[Mapping[str, Any]],
    records: Sequence[ModelVersion],
    *,
    metric: str,
    drift_at: int,
    path: Path,
) -> Path:
    """Each candidate's rolling ``metric`` over the event index, with the concept drift, the
    span each version served (shaded), and every other registry record (a drift detection, an
    action, an alert) as a thin line labeled with its kind."""
    plt = _pyplot()
    # A report's x: the events learned when it was made, as record_event counts them.
    curves = _candidate_curves(((int(r["events"]), r) for r in metrics), metric)
    figure, axes = plt.subplots(figsize=(10, 5.2), dpi=120)
    colors: dict[str, ColorType] = {}
    for name, (xs, ys) in curves.items():
        (line,) = axes.plot(xs, ys, label=name, linewidth=1.8)
        colors[name] = line.get_color()
    axes.axvline(drift_at, color="black", linestyle="--", linewidth=1.2, label="concept drift")
    last_event = max([xs[-1] for xs, _ in curves.values()], default=drift_at)
    located = [(at, r) for r in records if (at := record_event(r)) is not None]
    promotions = sorted((item for item in located if changes_serving(item[1])), key=_first)
    for index, (at, record) in enumerate(promotions):
        name = str(record.candidate.get("name"))
        color = colors.get(name, "tab:red")
        # Shade the span this version served (until the next promotion) in its candidate's color.
        until = promotions[index + 1][0] if index + 1 < len(promotions) else last_event
        axes.axvspan(at, max(at, until), color=color, alpha=0.07, linewidth=0)
        axes.axvline(at, color=color, linestyle=":", linewidth=1.4)
        _label_version(axes, at, f"v{record.version} {name}", color=color, fontsize=9)
    # A drift and the actions it caused share their event: one line, one label.
    notices: dict[int, list[ModelVersion]] = {}
    for at, record in located:
        if not changes_serving(record):
            notices.setdefault(at, []).append(record)
    for at, same_event in notices.items():
        color = _record_color(same_event[0])
        axes.axvline(at, color=color, linestyle="-.", linewidth=0.9)
        label = ", ".join(_notice_label(record) for record in same_event)
        _label_version(axes, at, label, color=color, fontsize=8)
    model = metrics[-1]["model"] if metrics else ""
    axes.set_title(f"{model}: rolling {metric} of each candidate (prequential)")
    axes.set_xlabel("event index")
    axes.set_ylabel(f"rolling {metric}")
    axes.grid(alpha=0.3)
    axes.legend(loc=_legend_corner(metric), title="shaded: the serving version")
    return _save(figure, path)


def _first(item: tuple[int, ModelVersion]) -> int:
    return item[0]


def _legend_corner(metric: str) -> str:
    # Away from where the curves mostly are: near the top for a score, near zero for a loss.
    return "lower right" if HIGHER_IS_BETTER[metric] else "upper right"


def _notice_label(record: ModelVersion) -> str:
    """A short label: ``drift in steady``, ``reset``, ``refit suppressed``, ``alert``."""
    if record.kind is RecordKind.ACTION:
        suppressed = " suppressed" if record.evidence.get("suppressed") else ""
        return f"{record.evidence.get('action', 'action')}{suppressed}"
    candidate = record.candidate.get("name")
    return f"{record.kind} in {candidate}" if candidate else str(record.kind)


#: How each arm's live curve is drawn: the version gives the color, the arm the line style.
_ARM_STYLES = {"stable": "-", "canary": "--", "shadow": ":"}
#: Colors of the versions' live curves: none of those the registry records' lines use.
_VERSION_COLORS = ("tab:blue", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def plot_live_metric(
    observation: Observation,
    *,
    metric: str,
    origin: float,
    drift_sent_at: float | None,
    path: Path,
) -> Path:
    """Two panels on one time axis (seconds from ``origin``, the first event sent): the
    trainer's rolling ``metric`` per candidate (prequential, when each report was published),
    and the scorer's live rolling ``metric`` per served (version, arm), from joined outcomes.
    Each registry record is a vertical line in both; the concept switch, when it was sent."""
    plt = _pyplot()
    figure, (trainer_axes, live_axes) = plt.subplots(2, 1, figsize=(10, 7.5), dpi=120, sharex=True)
    reports = zip((at - origin for at in observation.metrics_at), observation.metrics, strict=True)
    for name, (xs, ys) in _candidate_curves(reports, metric).items():
        trainer_axes.plot(xs, ys, label=name, linewidth=1.8)
    live = live_curves(observation.live, metric, origin)
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
    corner = _legend_corner(metric)
    trainer_axes.set_title(f"{model}: the trainer's rolling {metric} per candidate (prequential)")
    trainer_axes.set_ylabel(f"rolling {metric}")
    trainer_axes.legend(loc=corner, title="dashed black: the concept switch sent")
    live_axes.set_title(f"live rolling {metric} per served version and arm (joined outcomes)")
    live_axes.set_ylabel(f"live rolling {metric}")
    live_axes.set_xlabel("seconds since the first event was sent")
    if live:
        live_axes.legend(loc=corner, title="dotted: registry records")
    return _save(figure, path)


def live_curves(
    reports: Sequence[LiveReport], metric: str, origin: float
) -> dict[tuple[int, str], tuple[list[float], list[float]]]:
    """Per served (version, arm), its live rolling ``metric`` over time (seconds from
    ``origin``): one point per report that joined new outcomes, so that a version that stopped
    serving ends where its last outcome was joined (the scorer keeps reporting it)."""
    curves: dict[tuple[int, str], tuple[list[float], list[float]]] = {}
    joined: dict[tuple[int, str], int] = {}
    for report in reports:
        key = (report.version, report.arm)
        value = report.metric(metric, "rolling")
        if value is None or report.ts is None or joined.get(key) == report.joined:
            continue
        joined[key] = report.joined
        xs, ys = curves.setdefault(key, ([], []))
        xs.append(report.ts - origin)
        ys.append(value)
    return dict(sorted(curves.items()))


def _candidate_curves(
    reports: Iterable[tuple[float, Mapping[str, Any]]], metric: str
) -> dict[str, tuple[list[float], list[float]]]:
    """Per candidate, its rolling ``metric`` in the trainer's ``(x, report)`` pairs."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for x, report in reports:
        for name, scores in report["candidates"].items():
            value = scores["rolling"].get(metric)
            if value is not None:
                xs, ys = curves.setdefault(name, ([], []))
                xs.append(x)
                ys.append(value)
    return curves


def _record_color(record: ModelVersion) -> str:
    # What a record is, at a glance: a trial starts, ends well, ends badly; a drift, an action.
    return {
        RecordKind.CANARY: "tab:orange",
        RecordKind.SHADOW: "tab:orange",
        RecordKind.ROLLOUT: "tab:green",
        RecordKind.ROLLBACK: "tab:red",
        RecordKind.DRIFT: "crimson",
        RecordKind.ACTION: "darkgoldenrod",
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
