"""``driftline demo --delayed-labels``: labels only as delayed outcomes, and two canaries.

In production a label arrives after the prediction, and the trainer learns only what the
scorer's join gives it. This mode streams that shape:

- a first batch of :data:`WARMUP_EVENTS` labeled events, sent to the trainer directly: the scorer
  needs a version to serve before any outcome can be joined, and v1 comes from them;
- every later event unlabeled, its outcome 1-30 s later (``--outcome-delay``), a share
  :data:`BEFORE_SHARE` before its event and :data:`MISSING_SHARE` never, through the SDK's
  :class:`~streams.sdk.outcomes.OutcomeScheduler`. The labeled topic gets only what the scorer
  joins;
- two trials, published as an operator would (:class:`TrialDirector`): first a deliberately bad
  version (trained on flipped labels) as a :data:`TRIAL_FRACTION` canary, which the scorer's
  guardrail must roll back; once it has, a good one (the stable version's artifact, which goes
  on learning the last events' true labels), which it must roll out.

The guardrail's defaults (tolerance 0.02, 1,000 outcomes per arm) would take ~150k outcomes to
roll out a 10% canary; the workers of this mode get looser settings through their environment
(:func:`worker_environment`), and the demo says so on screen (:func:`guardrail_note`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from streams.cli.demo.errors import DemoError
from streams.cli.demo.options import DemoOptions
from streams.cli.demo.report import trial_end_index
from streams.cli.demo.trials import publish_canary, registry_publisher, train_candidate
from streams.cli.demo.watcher import TopicWatcher
from streams.config import DriftlineConfig
from streams.contract import event_position, record_coordinate
from streams.registry import artifacts
from streams.registry.records import TRIAL_KINDS, ModelVersion, RecordKind, serving_state
from streams.sdk import replay
from streams.sdk.outcomes import OutcomeCounts, OutcomeScheduler, OutcomeTiming
from streams.sdk.producer import EventProducer
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.cli.demo.live import LiveState

__all__ = [
    "BEFORE_SHARE",
    "GUARDRAIL_MIN_OUTCOMES",
    "GUARDRAIL_TOLERANCE",
    "MISSING_SHARE",
    "TRIAL_EXAMPLES",
    "TRIAL_FRACTION",
    "WARMUP_EVENTS",
    "DelayedStream",
    "Trial",
    "TrialDirector",
    "check_options",
    "guardrail_note",
    "stream_delayed",
    "trial_end",
    "worker_environment",
]

#: Labeled events sent before the rest goes through the join: enough for the trainer's warm-up
#: (1,000 events in the SEA example) and its first version.
WARMUP_EVENTS = 2_000
#: Shares of the outcomes sent before their event, and never sent.
BEFORE_SHARE = 0.1
MISSING_SHARE = 0.01
#: The canaries' share of the traffic: half, so that each arm gets outcomes at the same pace.
TRIAL_FRACTION = 0.5
#: Events (the most recent sent, with their true labels) each hand-made canary is trained on.
TRIAL_EXAMPLES = 2_000
#: The guardrail settings of this mode (see the module docstring).
GUARDRAIL_TOLERANCE = 0.1
GUARDRAIL_MIN_OUTCOMES = 300
#: Seconds between two live reports of the scorer (5 by default): a livelier view.
METRICS_INTERVAL = 1


def worker_environment(model: str) -> dict[str, str]:
    """The settings this mode gives the workers, as ``DRIFTLINE__`` environment overrides."""
    rollout = f"DRIFTLINE__models__{model}__rollout__"
    return {
        "DRIFTLINE__worker__metrics_interval": str(METRICS_INTERVAL),
        f"{rollout}tolerance": str(GUARDRAIL_TOLERANCE),
        f"{rollout}min_outcomes": str(GUARDRAIL_MIN_OUTCOMES),
    }


def check_options(options: DemoOptions, task: str) -> None:
    """Raise :class:`DemoError` for a model whose task is not classification (a bad canary
    learns flipped labels), or a stream too short for the warm-up batch and a trial."""
    if task != "classification":
        raise DemoError(f"--delayed-labels runs its trials on a classification model, not {task}")
    least = WARMUP_EVENTS + 2 * TRIAL_EXAMPLES
    if options.events < least:
        raise DemoError(f"--delayed-labels needs at least {least:,} events (--events)")


def guardrail_note(model: str) -> str:
    """What the demo says on screen about the settings it changed for this mode."""
    return (
        f"delayed labels: guardrail of {model} loosened for a short demo (tolerance "
        f"{GUARDRAIL_TOLERANCE:g} instead of 0.02, {GUARDRAIL_MIN_OUTCOMES} outcomes per arm "
        f"instead of 1,000), canaries at {TRIAL_FRACTION:.0%} of the traffic; live reports "
        f"every {METRICS_INTERVAL} s"
    )


def trial_end(versions: Sequence[ModelVersion], trial: ModelVersion) -> ModelVersion | None:
    """The record that ended ``trial`` (a canary among ``versions``, in log order), or None
    while it runs or before it is seen.

    Whatever changes what serves ends it: a rollout, a rollback, a trainer's own promotion,
    another trial (see :func:`~streams.cli.demo.report.trial_end_index`).
    """
    for index, record in enumerate(versions):
        if record.version == trial.version and record.kind in TRIAL_KINDS:
            end = trial_end_index(versions, index)
            return None if end is None else versions[end]
    return None


@dataclass(frozen=True)
class Trial:
    """A canary the demo published, and the record that ended it (None while it runs)."""

    record: ModelVersion
    bad: bool
    ended_by: ModelVersion | None = None

    @property
    def label(self) -> str:
        return "bad (flipped labels)" if self.bad else "good"


@dataclass
class TrialDirector:
    """Starts the bad canary once ``start_at`` events are sent and a version serves, then the
    good one once the bad trial has ended, and follows both to their end.

    ``launch(bad, stable, version)`` trains and publishes a canary and returns its record.
    :meth:`step` is called by the streaming loop as events go out; it never blocks but for a
    launch.
    """

    model: str
    start_at: int
    launch: Callable[[bool, ModelVersion, int], ModelVersion]
    trials: list[Trial] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """Whether both trials have started and ended."""
        return len(self.trials) == 2 and self.trials[-1].ended_by is not None

    def step(self, sent: int, versions: Sequence[ModelVersion]) -> None:
        """Follow the running trial in ``versions`` (the registry so far) and start the next."""
        if self.trials and self.trials[-1].ended_by is None:
            current = self.trials[-1]
            ended_by = trial_end(versions, current.record)
            if ended_by is None:
                return
            self.trials[-1] = Trial(current.record, current.bad, ended_by)
        if len(self.trials) >= 2 or sent < self.start_at:
            return
        state = serving_state(versions).get(self.model)
        # A trial of the trainer's own would be replaced by ours: wait until it is over.
        if state is None or state.trial is not None:
            return
        bad = not self.trials
        version = max(record.version for record in versions) + 1
        self.trials.append(Trial(self.launch(bad, state.stable, version), bad))

    def summary(self) -> str:
        """One line for the live view."""
        parts = []
        for trial in self.trials:
            end = trial.ended_by
            how = (
                "on trial"
                if end is None
                else f"{end.kind}"
                + (f" by {end.operator}" if end.operator else "")
                + (f" (to v{end.version})" if end.kind is RecordKind.ROLLBACK else "")
            )
            parts.append(f"v{trial.record.version} {trial.label}: {how}")
        return "; ".join(parts) or f"the first canary starts at event {self.start_at:,}"


def _stable_candidate(
    candidates: Sequence[Mapping[str, object]], stable: ModelVersion
) -> Mapping[str, object]:
    """The configured candidate the stable version was made of (the first one if none)."""
    name = stable.candidate.get("name")
    return next((spec for spec in candidates if spec.get("name") == name), candidates[0])


@dataclass
class DelayedStream:
    """What the delayed-labels stream sent, for the report."""

    produced_at: dict[str, float]
    """When each unlabeled event was sent (epoch seconds), by event id."""
    counts: OutcomeCounts
    warmup: int
    started_at: float
    """When the first event was sent (epoch seconds): the origin of the report's time axis."""
    drift_sent_at: float | None = None
    """When the event at the concept switch was sent (epoch seconds), if it was."""


def stream_delayed(
    options: DemoOptions,
    *,
    model: str,
    kind: str,
    config: DriftlineConfig,
    settings: Settings,
    state: LiveState,
    watcher: TopicWatcher,
    check_workers: Callable[[], None],
) -> DelayedStream:
    """Send the ``kind`` drift stream: the warm-up batch labeled, wait for v1, then the rest
    unlabeled with delayed outcomes, running the two trials meanwhile; returns once the last
    outcome is sent."""
    spec = config.models[model]
    recent: deque[tuple[dict[str, Any], Any]] = deque(maxlen=TRIAL_EXAMPLES)
    kafka_config = dict(settings.kafka)
    key = settings.signing_key()
    store = redis.Redis.from_url(settings.redis_url)
    publish = registry_publisher(kafka_config, config.topics.registry)

    def launch(bad: bool, stable: ModelVersion, version: int) -> ModelVersion:
        candidate = _stable_candidate(spec.candidates, stable)
        name = str(candidate["name"])
        latest = watcher.observation().latest or {}
        learned_to = int(
            latest.get("offset", record_coordinate(stable.lineage.get("last_offset", 0))[0])
        )
        # The bad one learns from scratch (a fresh model on flipped labels is wrong from the
        # start); the good one from the stable version on, so that it is at least as good.
        start = None if bad else artifacts.load(store, stable, key=key)
        how = (
            "a fresh model trained on flipped labels, a deliberately bad version"
            if bad
            else f"v{stable.version} trained further, a good version"
        )
        return publish_canary(
            train_candidate(candidate, spec.task, list(recent), flip=bad, start=start),
            name=name,
            stable=stable,
            version=version,
            fraction=TRIAL_FRACTION,
            reason=f"demo: {how}, on the last {len(recent):,} events sent",
            operator="driftline-demo",
            key=key,
            redis_prefix=settings.redis_prefix,
            store=store,
            publish=publish,
            lineage={
                "source": "driftline demo",
                "last_offset": event_position(learned_to, None),
                "events": int(latest.get("events", stable.lineage.get("events", 0))),
            },
        )

    warmup = min(WARMUP_EVENTS, options.events)
    director = TrialDirector(
        model=model,
        start_at=warmup + max(TRIAL_EXAMPLES, (options.drift_index - warmup) // 5),
        launch=launch,
    )
    state.director = director
    settings_kafka = dict(kafka_config)
    with EventProducer(
        settings_kafka.pop("bootstrap_servers"),
        topic=config.topics.labeled,
        unlabeled_topic=config.topics.unlabeled,
        outcomes_topic=config.topics.outcomes,
        **settings_kafka,
    ) as producer:
        scheduler = OutcomeScheduler(
            OutcomeTiming(
                delay=options.outcome_delay,
                before=BEFORE_SHARE,
                missing=MISSING_SHARE,
                seed=options.seed,
            ),
            send_event=lambda event: producer.send_unlabeled(_unlabeled(event)),
            send_outcome=producer.send_outcome,
        )
        state.outcomes = scheduler.counts
        source = iter(
            replay.from_drift(
                kind,
                model=model,
                events=options.events,
                drift_at=options.drift_index,
                seed=options.seed,
            )
        )
        run = DelayedStream({}, scheduler.counts, warmup, started_at=time.time())
        for event in replay.paced(source, rate=options.rate, limit=warmup):
            producer.send(event)
            recent.append((event["features"], event["label"]))
            state.sent += 1
        producer.flush()
        state.phase = f"waiting for v1, learned from the {warmup:,} labeled warm-up events"
        _wait_for_first_version(watcher, check_workers, timeout=FIRST_VERSION_TIMEOUT)
        state.phase = "streaming events unlabeled, their labels as delayed outcomes"
        for event in replay.paced(
            source, rate=options.rate, limit=options.events - warmup, sleep=scheduler.sleep
        ):
            if state.sent == options.drift_index:
                run.drift_sent_at = time.time()
            scheduler.submit(event)
            run.produced_at[event["event_id"]] = time.time()
            recent.append((event["features"], event["label"]))
            state.sent += 1
            if state.sent % 100 == 0:
                director.step(state.sent, watcher.observation().versions)
            if state.sent % 1000 == 0:
                check_workers()
        state.phase = "sending the last delayed outcomes"
        while scheduler.pending:
            scheduler.sleep(min(0.25, options.outcome_delay[1]))
            director.step(state.sent, watcher.observation().versions)
            check_workers()
        producer.flush()
    store.close()
    return run


#: How long the trainer may take to publish v1 from the warm-up batch.
FIRST_VERSION_TIMEOUT = 90.0


def _wait_for_first_version(
    watcher: TopicWatcher, check_workers: Callable[[], None], *, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not watcher.observation().versions:
        check_workers()
        if watcher.error is not None:
            raise DemoError(f"reading the topics failed: {watcher.error!r}")
        if time.monotonic() > deadline:
            raise DemoError(f"no version published {timeout:.0f} s after the warm-up batch")
        time.sleep(0.2)


def _unlabeled(event: Mapping[str, Any]) -> dict[str, Any]:
    # The scorer never sees the label: it comes back as the outcome.
    return {name: value for name, value in event.items() if name != "label"}
