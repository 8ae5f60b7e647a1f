"""Running the demo: the stack, the workers, the stream, the wait, then the report.

:func:`run` connects to Kafka and Redis (or starts the local stack), isolates the run under
fresh names, starts the trainer and scoring workers as subprocesses, waits until both are ready
(the live view shows each one's start-up stage, from its log), streams the drift dataset while
the live view shows what they publish, waits until every event is learned and scored, and writes
the report. The configuration's first model is the one shown: its task picks the drift stream
(:meth:`DemoOptions.stream_for <streams.cli.demo.options.DemoOptions.stream_for>`), and its
policy's metric is the one the view and the report show. Each run writes its workers' logs
afresh. Whatever happens (an error, Ctrl-C, SIGTERM), its ``finally`` stops what the demo
started.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from streams.admin import ensure_topics
from streams.cli.demo.delayed import (
    DelayedStream,
    check_options,
    guardrail_note,
    stream_delayed,
    worker_environment,
)
from streams.cli.demo.errors import DemoError, WorkerExited
from streams.cli.demo.live import REFRESH_PER_SECOND, LiveState, live_view
from streams.cli.demo.options import DemoOptions
from streams.cli.demo.report import (
    SUMMARY_NAME,
    DelayedLabels,
    build_summary,
    latest_live,
    plot_live_metric,
    plot_name,
    plot_rolling_metric,
    summary_markdown,
    summary_tables,
    trial_results,
)
from streams.cli.demo.startup import LogFollower
from streams.cli.demo.watcher import Observation, TopicWatcher
from streams.config import load_config
from streams.sdk import replay
from streams.sdk.producer import EventProducer
from streams.settings import Settings, SettingsError, redacted_url
from streams.stack import (
    METRICS_SD_DIR_ENV,
    PROMETHEUS_URL_ENV,
    Endpoints,
    LocalStack,
    broker,
    redis_server,
)
from streams.stack.process import log_tail
from streams.topics import Topics

__all__ = ["run"]

#: How long to wait, after the last event is sent, for it to be learned and scored.
COMPLETION_TIMEOUT = 120.0
WORKER_STOP_TIMEOUT = 20.0
#: How long the workers may take to start before the demo streams anyway (they then catch up).
STARTUP_TIMEOUT = 60.0
#: The scorer's wait for the model's first version: the trainer publishes it only after its
#: warm-up, and a worker that starts slowly (two faust workers on a small machine) must not
#: make the scorer dead-letter the first events.
SCORER_MAX_WAIT = 90.0
#: Security settings that belong to a remote cluster, not to the embedded stack.
_REMOTE_KAFKA_PREFIXES = ("KAFKA_SECURITY_", "KAFKA_SASL_", "KAFKA_SSL_")


@dataclass
class Worker:
    """A worker subprocess the demo started."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    startup: LogFollower

    def check(self) -> None:
        """Raise :class:`WorkerExited` if the worker has ended on its own."""
        code = self.process.poll()
        if code is not None:
            raise WorkerExited(
                f"the {self.name} exited with code {code}; its log ({self.log}) ends:\n"
                f"{log_tail(self.log)}"
            )


def _start_worker(name: str, argv: list[str], env: Mapping[str, str], log: Path) -> Worker:
    # A fresh log per run: one appended to across runs mixes their start-ups and errors.
    with open(log, "wb") as handle:
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
    return Worker(name, process, log, LogFollower(argv[0], log))


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


def _check(workers: Sequence[Worker]) -> None:
    """Raise :class:`WorkerExited` if any of ``workers`` has ended on its own."""
    for worker in workers:
        worker.check()


def _answers(redis_url: str) -> bool:
    """Whether the environment's Kafka cluster (with its security settings) and Redis answer."""
    kafka = Settings.from_env().kafka
    bootstrap = kafka.pop("bootstrap_servers")
    return broker.broker_answers(bootstrap, **kafka) and redis_server.answers(redis_url)


def _connect(console: Console) -> tuple[Endpoints, LocalStack | None]:
    """Kafka and Redis from the environment if both answer, else the local stack.

    Returns the endpoints and the stack when this call started it (so the demo stops it).
    """
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    url = os.environ.get("REDIS_URL")
    if bootstrap and url and _answers(url):
        console.print(f"using Kafka at {bootstrap} and Redis at {redacted_url(url)}")
        sd_dir = os.environ.get(METRICS_SD_DIR_ENV)
        return Endpoints(
            bootstrap,
            url,
            prometheus_url=os.environ.get(PROMETHEUS_URL_ENV),
            metrics_sd_dir=Path(sd_dir) if sd_dir else None,
        ), None
    stack = LocalStack()
    # Prometheus too, where Debian's package is installed: the summary then links to it.
    with_prometheus = shutil.which("prometheus") is not None
    report = stack.status()
    if report and all(service["answers"] for service in report.values()):
        console.print(f"reusing the local stack running from {stack.state_dir}")
        return stack.up(with_prometheus=with_prometheus), None
    console.print(
        f"no Kafka/Redis reachable: starting the local stack (state in {stack.state_dir}; "
        "stopped at the end unless --keep-stack)"
    )
    endpoints = stack.up(with_prometheus=with_prometheus)
    console.print(
        f"local stack up: Kafka at {endpoints.kafka_bootstrap}, Redis at {endpoints.redis_url}"
    )
    return endpoints, stack


def _prometheus_query(prometheus_url: str) -> str:
    """A link to the events learned per model in Prometheus's expression browser.

    >>> _prometheus_query("http://127.0.0.1:9090/")[:60]
    'http://127.0.0.1:9090/graph?g0.expr=rate%28driftline_events_'
    """
    expression = "rate(driftline_events_learned_total[30s])"
    return f"{prometheus_url.rstrip('/')}/graph?" + urllib.parse.urlencode(
        {"g0.expr": expression, "g0.tab": "0", "g0.range_input": "5m"}
    )


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
    if endpoints.prometheus_url and endpoints.metrics_sd_dir:
        env[PROMETHEUS_URL_ENV] = endpoints.prometheus_url
        env[METRICS_SD_DIR_ENV] = str(endpoints.metrics_sd_dir)
    try:
        Settings.from_env(env).signing_key()
    except SettingsError:
        env["DRIFTLINE_SIGNING_KEY"] = secrets.token_hex(32)
        console.print(
            "DRIFTLINE_SIGNING_KEY is not set: this run signs its artifacts with a random key"
        )
    return env


def _wait_until_ready(workers: Sequence[Worker], state: LiveState, *, timeout: float) -> None:
    """Follow the workers' start-up in their logs until each takes events, or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stages = {}
        for worker in workers:
            worker.check()
            stages[worker.name] = worker.startup.stage()
        # A new dict, not one changed in place: rich's refresh thread iterates it.
        state.workers = {name: text for name, (text, _) in stages.items()}
        if all(ready for _, ready in stages.values()):
            return
        time.sleep(0.1)
    late = f" (still, after {timeout:.0f} s: streaming anyway)"
    state.workers = {name: text + late for name, text in state.workers.items()}


def _stream(
    options: DemoOptions,
    *,
    model: str,
    kind: str,
    topics: Topics,
    kafka_config: Mapping[str, Any],
    state: LiveState,
    workers: Sequence[Worker],
) -> dict[str, float]:
    """Send the ``kind`` drift stream at the options' rate; returns when each event was sent,
    by event id."""
    produced_at: dict[str, float] = {}
    settings = dict(kafka_config)
    with EventProducer(
        settings.pop("bootstrap_servers"),
        topic=topics.labeled,
        unlabeled_topic=topics.unlabeled,
        # One record per event: the report counts events by their offsets (record_event).
        batch_events=1,
        **settings,
    ) as producer:
        events = replay.from_drift(
            kind,
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
            # Wall-clock, as the broker's timestamps of the registry records it is compared with.
            produced_at[event["event_id"]] = time.time()
            state.sent += 1
            if state.sent % 1000 == 0:
                _check(workers)
        producer.flush()
    return produced_at


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
        _check(workers)
        observation = watcher.observation()
        missing = []
        if observation.learned < learn_target:
            missing.append(f"learned {observation.learned:,} of {learn_target:,} events")
        if observation.scored < events:
            missing.append(f"scored {observation.scored:,} of {events:,} events")
        if not missing or time.monotonic() > deadline:
            return [f"after {timeout:.0f} s: {line}" for line in missing]
        time.sleep(0.25)


def _delayed_summary(observation: Observation, delayed: DelayedStream) -> DelayedLabels:
    return DelayedLabels(
        warmup=delayed.warmup,
        outcomes=delayed.counts,
        live=list(latest_live(observation.live).values()),
        trials=trial_results(
            observation.versions, observation.published_at, origin=delayed.started_at
        ),
        expired=observation.join_counts.get("expired", 0),
        unmatched=observation.join_counts.get("unmatched", 0),
    )


def run(options: DemoOptions, *, console: Console | None = None) -> int:
    """Run the demo; returns the exit code (0: every event learned and scored)."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    config_path = options.config_path
    report_dir = options.report_dir.resolve()
    if not config_path.is_file():
        raise DemoError(f"no configuration at {config_path}")
    # Before anything starts: the model's task picks the stream and limits what the options do.
    task = next(iter(load_config(config_path).models.values())).task
    kind = options.stream_for(task)
    if options.delayed_labels:
        check_options(options, task)
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
        spec = config.models[model]
        note = None
        if options.delayed_labels:
            env.update(worker_environment(model))
            config = load_config(config_path, env)
            note = guardrail_note(model)
            console.print(note)
        settings = Settings.from_env(env)
        kafka_config = settings.kafka
        ensure_topics(config.topics, kafka_config, config.topic_settings)
        console.print(f"run {run_id}: topics {run_id}.*, logs and report in {report_dir}")

        # The workers sign registry records with this run's key; the watcher skips any other.
        watcher = TopicWatcher(config.topics, kafka_config, model, key=settings.signing_key())
        watcher.start()
        config_arg = ["--config", str(config_path)]
        workers_started = time.monotonic()
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
        state = LiveState(
            events=options.events,
            metric=spec.policy.metric,
            report_every=config.worker.metrics_every,
            note=note,
        )
        every = config.worker.metrics_every
        delayed: DelayedStream | None = None
        with Live(
            get_renderable=lambda: live_view(state, watcher.observation()),
            console=console,
            refresh_per_second=REFRESH_PER_SECOND,
        ):
            _wait_until_ready(workers, state, timeout=STARTUP_TIMEOUT)
            startup_seconds = time.monotonic() - workers_started
            state.phase = "streaming events"
            first_event = time.monotonic()
            if options.delayed_labels:
                delayed = stream_delayed(
                    options,
                    model=model,
                    kind=kind,
                    config=config,
                    settings=settings,
                    state=state,
                    watcher=watcher,
                    check_workers=lambda: _check(workers),
                )
                produced_at = delayed.produced_at
                # The trainer learns the warm-up batch and every event whose outcome was sent.
                to_learn = options.events - delayed.counts.missing
                to_score = options.events - delayed.warmup
            else:
                produced_at = _stream(
                    options,
                    model=model,
                    kind=kind,
                    topics=config.topics,
                    kafka_config=kafka_config,
                    state=state,
                    workers=workers,
                )
                to_learn = to_score = options.events
            state.streamed_seconds = time.monotonic() - first_event
            state.phase = "waiting for the workers to learn and score every event"
            missing = _wait_until_done(
                watcher,
                workers,
                # The trainer reports every `every` events: that many is all a report can show.
                learn_target=to_learn - to_learn % every,
                events=to_score,
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
            metric=spec.policy.metric,
            stream=kind,
            options=options,
            produced_at=produced_at,
            scored_ids=watcher.scored_event_ids(),
            startup_seconds=startup_seconds,
            pipeline_seconds=pipeline_seconds,
            total_seconds=time.monotonic() - started,
            missing=missing,
            delayed=None if delayed is None else _delayed_summary(final, delayed),
        )
        out = Console()
        out.print(summary_tables(summary))
        plot_path = report_dir / plot_name(summary.metric)
        if delayed is None:
            plot = plot_rolling_metric(
                final.metrics,
                final.versions,
                metric=summary.metric,
                drift_at=summary.drift_at,
                path=plot_path,
            )
        else:
            plot = plot_live_metric(
                final,
                metric=summary.metric,
                origin=delayed.started_at,
                drift_sent_at=delayed.drift_sent_at,
                path=plot_path,
            )
        markdown = report_dir / SUMMARY_NAME
        text = summary_markdown(summary, plot_file=plot.name)
        if endpoints.prometheus_url:
            query = _prometheus_query(endpoints.prometheus_url)
            text += f"\nPrometheus: [events learned per model]({query})\n"
            out.print(f"prometheus: {query}")
        markdown.write_text(text)
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
