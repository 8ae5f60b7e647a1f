"""``driftline demo``: the whole pipeline on a drifting stream, watched live, then reported.

One run, from nothing to a report:

1. connect to Kafka and Redis from ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL`` when both answer,
   else start the embedded local stack (and stop it at the end, unless ``--keep-stack``);
2. isolate the run: a fresh topic prefix, Redis prefix and consumer group; the signing key from
   the environment, or a random one for this run;
3. start a trainer worker (``driftline worker``) and a scoring worker (``driftline score``) as
   subprocesses, their logs in the report folder;
4. stream a SEA drift dataset at ``--rate`` events/s, each event both labeled (for the trainer)
   and unlabeled (for the scorer);
5. show, live, what the workers publish: the metrics topic (events learned, each candidate's
   rolling accuracy, the champion), the registry topic (promotions and their reasons) and the
   predictions topic (events scored, per serving version);
6. once every event is learned and scored (or a bounded wait runs out), stop the workers and
   write ``summary.md`` and ``rolling_accuracy.png`` to the report folder.

Whatever happens (an error, Ctrl-C, SIGTERM), the ``finally`` of :func:`run` stops what the demo
started. The pure parts (:func:`build_summary`, :func:`summary_markdown`,
:func:`plot_rolling_accuracy`) work from plain metric records and registry records.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streams.admin import ensure_topics
from streams.config import (
    ConfigFileError,
    kafka_settings,
    load_config,
    redacted_url,
    signing_key,
)
from streams.registry.records import ModelVersion, parse_record
from streams.sdk import replay
from streams.sdk.producer import EventProducer
from streams.stack import Endpoints, LocalStack, broker, redis_server
from streams.stack.process import log_tail
from streams.topics import Topics

__all__ = [
    "DEFAULT_CONFIG",
    "CandidateResult",
    "DemoError",
    "DemoOptions",
    "DemoSummary",
    "Observation",
    "TopicWatcher",
    "WorkerExited",
    "build_summary",
    "plot_rolling_accuracy",
    "promotion_event",
    "run",
    "summary_markdown",
    "summary_tables",
]

#: The SEA example ships inside the package, so an installed driftline (the Docker image) has it.
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "sea.toml"
PLOT_NAME = "rolling_accuracy.png"
SUMMARY_NAME = "summary.md"
#: How long to wait, after the last event is sent, for it to be learned and scored.
COMPLETION_TIMEOUT = 120.0
WORKER_STOP_TIMEOUT = 20.0
#: The scorer's wait for the model's first version: the trainer publishes it only after its
#: warm-up, and a worker that starts slowly (two faust workers on a small machine) must not
#: make the scorer dead-letter the first events.
SCORER_MAX_WAIT = 90.0
REFRESH_PER_SECOND = 4
#: Security settings that belong to a remote cluster, not to the embedded stack.
_REMOTE_KAFKA_PREFIXES = ("KAFKA_SECURITY_", "KAFKA_SASL_", "KAFKA_SSL_")


class DemoError(RuntimeError):
    """The demo cannot go on: a missing configuration, a worker that died, a topic not found."""


class WorkerExited(DemoError):
    """A worker subprocess ended before the demo stopped it; the message ends with its log."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``driftline demo`` was asked to do."""

    events: int = 40_000
    drift_at: int | None = None
    rate: float | None = 2000.0
    seed: int = 42
    config: Path | None = None
    """The models' configuration (default: :data:`DEFAULT_CONFIG`)."""
    report_dir: Path = Path("driftline-report")
    keep_stack: bool = False

    @property
    def config_path(self) -> Path:
        """The configuration file, absolute: the workers may run from another folder."""
        return (self.config or DEFAULT_CONFIG).resolve()

    @property
    def drift_index(self) -> int:
        """Index of the concept switch (default: the middle of the stream)."""
        return self.events // 2 if self.drift_at is None else self.drift_at


# ---------------------------------------------------------------------------------------------
# Reading what the workers publish
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """What the metrics, registry and predictions topics held at one moment, for one model."""

    metrics: tuple[dict[str, Any], ...] = ()
    versions: tuple[ModelVersion, ...] = ()
    predictions_by_version: Mapping[int, int] = field(default_factory=dict)
    scored: int = 0
    """Distinct events scored (predictions are at-least-once; a re-scored event counts once)."""

    @property
    def latest(self) -> dict[str, Any] | None:
        """The last metrics report."""
        return self.metrics[-1] if self.metrics else None

    @property
    def learned(self) -> int:
        """Events learned as of the last metrics report."""
        return self.latest["events"] if self.latest else 0


class TopicWatcher(threading.Thread):
    """Reads the metrics, registry and predictions topics from their beginning, in the background.

    No consumer group: it assigns every partition and seeks to the beginning, so it sees the
    whole run however late it starts, and leaves no committed offsets behind.
    """

    def __init__(
        self,
        topics: Topics,
        kafka_config: Mapping[str, Any],
        model: str,
        *,
        metadata_timeout: float = 30.0,
    ) -> None:
        super().__init__(name="driftline-demo-watcher", daemon=True)
        self.topics = topics
        self.kafka_config = dict(kafka_config)
        self.model = model
        self.metadata_timeout = metadata_timeout
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._metrics: list[dict[str, Any]] = []
        self._versions: list[ModelVersion] = []
        self._by_version: Counter[int] = Counter()
        self._scored_ids: set[str] = set()

    def observation(self) -> Observation:
        """A consistent copy of everything read so far."""
        with self._lock:
            return Observation(
                metrics=tuple(self._metrics),
                versions=tuple(self._versions),
                predictions_by_version=dict(self._by_version),
                scored=len(self._scored_ids),
            )

    def stop(self) -> None:
        """Ask the thread to finish (within one poll) and wait for it."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=5)

    def run(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(enable_auto_commit=False, **self.kafka_config)
        try:
            assigned = self._partitions(consumer)
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
            while not self._stopping.is_set():
                for tp, records in consumer.poll(timeout_ms=250).items():
                    with self._lock:
                        for record in records:
                            self._take(tp.topic, record.value, f"{tp.topic}[{tp.partition}]")
        except Exception as error:  # reported by the demo's main thread
            self.error = error
        finally:
            consumer.close()

    def _partitions(self, consumer: Any) -> list[Any]:
        from kafka import TopicPartition

        names = (self.topics.metrics, self.topics.registry, self.topics.predictions)
        deadline = time.monotonic() + self.metadata_timeout
        # Topics created a moment ago may not be in the broker's metadata yet.
        while True:
            found = {name: consumer.partitions_for_topic(name) for name in names}
            if all(found.values()):
                return [TopicPartition(n, p) for n in names for p in sorted(found[n])]
            if time.monotonic() > deadline or self._stopping.is_set():
                missing = [name for name, partitions in found.items() if not partitions]
                raise DemoError(f"topics not found on the broker: {', '.join(missing)}")
            time.sleep(0.2)

    def _take(self, topic: str, raw: bytes | None, where: str) -> None:
        if topic == self.topics.registry:
            record = parse_record(raw, where=where)
            if record is not None and record.model == self.model:
                self._versions.append(record)
            return
        try:
            value = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            return  # not ours to judge: the demo only watches
        if not isinstance(value, dict) or value.get("model") != self.model:
            return
        if topic == self.topics.metrics:
            self._metrics.append(value)
        else:
            self._by_version[value.get("version")] += 1
            self._scored_ids.add(value.get("event_id"))


# ---------------------------------------------------------------------------------------------
# The summary and the plot (pure)
# ---------------------------------------------------------------------------------------------


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


def _accuracy(value: float | None) -> str:
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
                    _accuracy(c.rolling_accuracy),
                    _accuracy(c.cumulative_accuracy),
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
    colors: dict[str, str] = {}
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


# ---------------------------------------------------------------------------------------------
# The live view
# ---------------------------------------------------------------------------------------------


class RateMeter:
    """Events per second over the last few seconds of a growing count."""

    def __init__(self, span: float = 3.0) -> None:
        self.span = span
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, count: int, now: float | None = None) -> float:
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
    sent: int = 0
    phase: str = "starting the workers"
    streamed_seconds: float | None = None
    """How long streaming took, once it is over."""
    sent_rate: RateMeter = field(default_factory=RateMeter)
    learned_rate: RateMeter = field(default_factory=RateMeter)


def live_view(state: LiveState, observation: Observation) -> Group:
    """The table the terminal shows while the demo runs."""
    latest = observation.latest or {}
    status = Table(title=f"driftline demo: {state.phase}", title_justify="left", show_header=False)
    status.add_column(style="bold")
    status.add_column()
    if state.streamed_seconds is None:
        pace = f"{state.sent_rate.update(state.sent):,.0f}/s"
    else:
        pace = f"in {state.streamed_seconds:.1f} s"
    status.add_row("events sent", f"{state.sent:,} / {state.events:,}  ({pace})")
    status.add_row(
        "events learned",
        f"{observation.learned:,}  ({state.learned_rate.update(observation.learned):,.0f}/s)",
    )
    for name, scores in latest.get("candidates", {}).items():
        status.add_row(
            f"  {name}", f"rolling accuracy {_accuracy(scores['rolling'].get('accuracy'))}"
        )
    if latest:
        status.add_row("champion", f"{latest.get('champion')} (v{latest.get('version')})")
    by_version = ", ".join(
        f"v{v}: {n:,}" for v, n in sorted(observation.predictions_by_version.items())
    )
    status.add_row("predictions scored", f"{observation.scored:,}  {by_version}")
    promotions = Table(title="promotions", title_justify="left")
    for column in ("version", "candidate", "kind", "at event", "reason"):
        promotions.add_column(column, overflow="fold")
    for record in observation.versions:
        promotions.add_row(
            f"v{record.version}",
            str(record.candidate.get("name")),
            record.kind,
            f"{promotion_event(record):,}",
            record.reason,
        )
    return Group(status, promotions)


# ---------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------


@dataclass
class Worker:
    """A worker subprocess the demo started."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def check(self) -> None:
        """Raise :class:`WorkerExited` if the worker has ended on its own."""
        code = self.process.poll()
        if code is not None:
            raise WorkerExited(
                f"the {self.name} exited with code {code}; its log ({self.log}) ends:\n"
                f"{log_tail(self.log)}"
            )


def _start_worker(name: str, argv: list[str], env: Mapping[str, str], log: Path) -> Worker:
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli.main", *argv],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches the demo only, which then stops
            # the workers itself, in order, and waits for them.
            start_new_session=True,
        )
    return Worker(name, process, log)


def _stop_workers(workers: Sequence[Worker], *, timeout: float = WORKER_STOP_TIMEOUT) -> None:
    """SIGTERM every worker at once (faust shuts down cleanly), then SIGKILL the stragglers."""
    running = [worker for worker in workers if worker.process.poll() is None]
    for worker in running:
        worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for worker in running:
        try:
            worker.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def _answers(redis_url: str) -> bool:
    """Whether the environment's Kafka cluster (with its security settings) and Redis answer."""
    settings = kafka_settings()
    bootstrap = settings.pop("bootstrap_servers")
    return broker.broker_answers(bootstrap, **settings) and redis_server.answers(redis_url)


def _connect(console: Console) -> tuple[Endpoints, LocalStack | None]:
    """Kafka and Redis from the environment if both answer, else the local stack.

    Returns the endpoints and the stack when this call started it (so the demo stops it).
    """
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    url = os.environ.get("REDIS_URL")
    if bootstrap and url and _answers(url):
        console.print(f"using Kafka at {bootstrap} and Redis at {redacted_url(url)}")
        return Endpoints(bootstrap, url), None
    stack = LocalStack()
    report = stack.status()
    if report and all(service["answers"] for service in report.values()):
        console.print(f"reusing the local stack running from {stack.state_dir}")
        return stack.up(), None
    console.print(
        f"no Kafka/Redis reachable: starting the local stack (state in {stack.state_dir}; "
        "stopped at the end unless --keep-stack)"
    )
    endpoints = stack.up()
    console.print(
        f"local stack up: Kafka at {endpoints.kafka_bootstrap}, Redis at {endpoints.redis_url}"
    )
    return endpoints, stack


def _environment(endpoints: Endpoints, run_id: str, console: Console) -> dict[str, str]:
    """The workers' environment: this run's endpoints, names and signing key."""
    env = dict(os.environ)
    if env.get("KAFKA_BOOTSTRAP_SERVERS") != endpoints.kafka_bootstrap:
        env = {k: v for k, v in env.items() if not k.startswith(_REMOTE_KAFKA_PREFIXES)}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap,
            "REDIS_URL": endpoints.redis_url,
            "DRIFTLINE_TOPIC_PREFIX": f"{run_id}.",
            "DRIFTLINE_REDIS_PREFIX": f"{run_id}:",
            "DRIFTLINE__worker__group": f"{run_id}-trainer",
        }
    )
    try:
        signing_key(env)
    except ConfigFileError:
        env["DRIFTLINE_SIGNING_KEY"] = secrets.token_hex(32)
        console.print(
            "DRIFTLINE_SIGNING_KEY is not set: this run signs its artifacts with a random key"
        )
    return env


def _stream(
    options: DemoOptions,
    *,
    model: str,
    topics: Topics,
    kafka_config: Mapping[str, Any],
    state: LiveState,
    workers: Sequence[Worker],
) -> None:
    settings = dict(kafka_config)
    with EventProducer(
        settings.pop("bootstrap_servers"),
        topic=topics.labeled,
        unlabeled_topic=topics.unlabeled,
        **settings,
    ) as producer:
        events = replay.from_drift(
            "sea",
            model=model,
            events=options.events,
            drift_at=options.drift_index,
            seed=options.seed,
        )
        for event in replay.paced(events, rate=options.rate, limit=options.events):
            producer.send(event)
            # The unlabeled contract ignores the label, so the same event makes the copy the
            # scorer sees, without its label.
            producer.send_unlabeled(event)
            state.sent += 1
            if state.sent % 1000 == 0:
                for worker in workers:
                    worker.check()
        producer.flush()


def _wait_until_done(
    watcher: TopicWatcher,
    workers: Sequence[Worker],
    *,
    learn_target: int,
    events: int,
    timeout: float,
) -> list[str]:
    """Wait until every event is learned and scored; returns what is still missing."""
    deadline = time.monotonic() + timeout
    while True:
        if watcher.error is not None:
            raise DemoError(f"reading the topics failed: {watcher.error!r}")
        for worker in workers:
            worker.check()
        observation = watcher.observation()
        missing = []
        if observation.learned < learn_target:
            missing.append(f"learned {observation.learned:,} of {learn_target:,} events")
        if observation.scored < events:
            missing.append(f"scored {observation.scored:,} of {events:,} events")
        if not missing or time.monotonic() > deadline:
            return [f"after {timeout:.0f} s: {line}" for line in missing]
        time.sleep(0.25)


def run(options: DemoOptions, *, console: Console | None = None) -> int:
    """Run the demo; returns the exit code (0: every event learned and scored)."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    config_path = options.config_path
    report_dir = options.report_dir.resolve()
    if not config_path.is_file():
        raise DemoError(f"no configuration at {config_path}")
    report_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    stack: LocalStack | None = None
    workers: list[Worker] = []
    watcher: TopicWatcher | None = None
    # SIGTERM takes the same way out as Ctrl-C, through the finally below.
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        endpoints, stack = _connect(console)
        env = _environment(endpoints, run_id, console)
        config = load_config(config_path, env)
        model = next(iter(config.models))
        kafka_config = kafka_settings(env)
        ensure_topics(config.topics, kafka_config, partitions=config.worker.partitions)
        console.print(f"run {run_id}: topics {run_id}.*, logs and report in {report_dir}")

        watcher = TopicWatcher(config.topics, kafka_config, model)
        watcher.start()
        config_arg = ["--config", str(config_path)]
        workers = [
            _start_worker(
                "trainer worker", ["worker", *config_arg], env, report_dir / "trainer.log"
            ),
            _start_worker(
                "scoring worker",
                ["score", *config_arg, "--max-wait", str(SCORER_MAX_WAIT)],
                env,
                report_dir / "scorer.log",
            ),
        ]
        state = LiveState(events=options.events)
        # The trainer reports every metrics_every events, so that many is all a report can show.
        learn_target = options.events - options.events % config.worker.metrics_every
        with Live(
            get_renderable=lambda: live_view(state, watcher.observation()),
            console=console,
            refresh_per_second=REFRESH_PER_SECOND,
        ):
            state.phase = "streaming events"
            first_event = time.monotonic()
            _stream(
                options,
                model=model,
                topics=config.topics,
                kafka_config=kafka_config,
                state=state,
                workers=workers,
            )
            state.streamed_seconds = time.monotonic() - first_event
            state.phase = "waiting for the workers to learn and score every event"
            missing = _wait_until_done(
                watcher,
                workers,
                learn_target=learn_target,
                events=options.events,
                timeout=COMPLETION_TIMEOUT,
            )
            pipeline_seconds = time.monotonic() - first_event
            state.phase = "done" if not missing else "incomplete"
        if not console.is_terminal:
            console.line()  # a terminal ends the live view's last frame; a file does not
        _stop_workers(workers)
        watcher.stop()
        final = watcher.observation()
        summary = build_summary(
            final,
            model=model,
            options=options,
            pipeline_seconds=pipeline_seconds,
            total_seconds=time.monotonic() - started,
            missing=missing,
        )
        out = Console()
        out.print(summary_tables(summary))
        plot = plot_rolling_accuracy(
            final.metrics, summary.versions, drift_at=summary.drift_at, path=report_dir / PLOT_NAME
        )
        markdown = report_dir / SUMMARY_NAME
        markdown.write_text(summary_markdown(summary, plot_name=plot.name))
        out.print(f"report: {markdown}\nplot:   {plot}")
        return 0 if not missing else 1
    except KeyboardInterrupt:
        console.print("interrupted: stopping what the demo started")
        return 130
    finally:
        _stop_workers(workers)
        if watcher is not None:
            watcher.stop()
        if stack is not None and not options.keep_stack:
            for line in stack.down():
                console.print(f"local stack: {line}")
        elif stack is not None:
            console.print("the local stack keeps running (stop it with: driftline stack down)")
        signal.signal(signal.SIGTERM, previous_sigterm)
