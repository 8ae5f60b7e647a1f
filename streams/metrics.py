"""Prometheus metrics of driftline's workers: every definition in one place.

Operators watch Prometheus and Grafana, so each long-running worker (``driftline worker``,
``driftline score``) serves its metrics over HTTP (:meth:`WorkerMetrics.serve`) and may register
itself for Prometheus's file-based service discovery (:func:`register_target`). The workers only
make small calls into :class:`TrainerMetrics` and :class:`ScorerMetrics`; the names, help texts,
labels and buckets live here, and ``deploy/`` (the dashboard, the alert rules) names nothing
that is not defined below (the monitoring integration test runs every panel's query).

Two ways in:

- **counted where it happens**: events learned, dead letters, skips, promotions, predictions,
  swaps, refusals, checkpoint and prediction latencies. The event loop increments a cached
  labelled child (no label lookup per event);
- **read at scrape time** from a snapshot: the candidates' metrics and the champion (each
  model's last report), the live boards of the scorer, the serving table, and the consumer lag
  from faust's own monitor. The event loop replaces a snapshot whole and the scrape thread
  only reads it, so the two never share a structure being mutated; series of a version or
  candidate that went away disappear instead of lingering at their last value.

Labels are bounded: a model, a candidate, a version, an arm, a reason code, a topic and a
partition. Never an event id or anything else that grows with the stream. The counters of a
known label set (every reason code, every configured model and kind) start at 0 when the worker
starts (:meth:`WorkerMetrics.expect`), so that a rate or an alert over them has a series before
the first occurrence rather than none.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import faust
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.contract import ReasonCode
from streams.settings import METRICS_SD_DIR_ENV
from trainers.guardrail import ALERT, ROLLBACK, ROLLOUT

__all__ = [
    "SD_DIR_ENV",
    "ScorerMetrics",
    "TrainerMetrics",
    "WorkerMetrics",
    "register_target",
]

log = logging.getLogger("driftline.metrics")

# A ``_created`` sample beside every counter and histogram doubles the series for a timestamp
# that Prometheus does not use.
disable_created_metrics()

SD_DIR_ENV = METRICS_SD_DIR_ENV

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# A metrics summary carries counts beside the metrics; they are not levels to plot.
_NOT_METRICS = frozenset({"n", "missing", "missing_proba"})


def _levels(summary: Mapping[str, Any] | None) -> Iterator[tuple[str, float]]:
    """The (metric, value) pairs of a metrics summary that have a value (not None, not NaN)."""
    for name, value in (summary or {}).items():
        if name in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isnan(value):
            yield name, float(value)


class _Snapshot(Collector):
    """Metric families built at scrape time by ``build`` from whatever the loop last stored."""

    def __init__(self, build: Callable[[], Iterable[Metric]]) -> None:
        self._build = build

    def collect(self) -> Iterable[Metric]:
        return list(self._build())


class _CommitSensor(faust.Sensor):
    """faust's commit sensor hook, observed into a histogram (faust times the commit)."""

    def __init__(self, histogram: Histogram) -> None:
        super().__init__()
        self._histogram = histogram

    def on_commit_initiated(self, consumer: Any) -> Any:
        return time.perf_counter()

    def on_commit_completed(self, consumer: Any, state: Any) -> None:
        self._histogram.observe(time.perf_counter() - state)


class WorkerMetrics:
    """What every worker exposes: dead letters, skips, and its consumer's lag and commits.

    Parameters
    ----------
    role
        ``trainer`` or ``scorer``: the ``job`` the worker registers under is ``driftline-ROLE``.
    registry
        Where the metrics live; a new one by default, so that several workers (or tests) in
        one process do not share counters.
    """

    def __init__(self, role: str, registry: CollectorRegistry | None = None) -> None:
        self.role = role
        self.registry = registry or CollectorRegistry()
        self.port: int | None = None
        self._dead_letters = Counter(
            "driftline_dead_letters_total",
            "Records sent to the dead-letter topic, by reason code.",
            ["reason"],
            registry=self.registry,
        )
        self._skipped = Counter(
            "driftline_events_skipped_total",
            "Records not handled again: replayed after a restart (at or before the checkpoint's "
            "cursor) or a join published twice.",
            ["reason"],
            registry=self.registry,
        )
        self._commit_latency = Histogram(
            "driftline_consumer_commit_latency_seconds",
            "Time faust takes to commit the consumer's offsets to Kafka.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    #: The reasons :meth:`skipped` is called with.
    SKIP_REASONS: tuple[str, ...] = ("replayed",)

    def expect(self, models: Iterable[str]) -> None:
        """Start the counters of every known label set at 0 (see the module docstring)."""
        for code in ReasonCode:
            self._dead_letters.labels(code.value)
        for reason in self.SKIP_REASONS:
            self._skipped.labels(reason)

    def dead_letter(self, reason: str) -> None:
        self._dead_letters.labels(reason).inc()

    def skipped(self, reason: str) -> None:
        self._skipped.labels(reason).inc()

    def watch_consumer(self, app: faust.App) -> None:
        """Expose the lag of ``app``'s consumer per partition and its commit latency, as faust's
        monitor and sensors measure them."""
        monitor = app.monitor
        app.sensors.add(_CommitSensor(self._commit_latency))

        def lag() -> Iterable[Metric]:
            family = GaugeMetricFamily(
                "driftline_consumer_lag",
                "Records in a consumed partition past the consumer's last commit (log end offset "
                "at the last fetch minus the committed offset, the next one to read).",
                labels=["topic", "partition"],
            )
            # dict() copies in one step under the GIL while the consumer thread updates them.
            ends, committed = dict(monitor.tp_end_offsets), dict(monitor.tp_committed_offsets)
            for tp, end in sorted(ends.items()):
                done = committed.get(tp)
                if done is not None:
                    family.add_metric([tp.topic, str(tp.partition)], max(end - done, 0))
            yield family

        self.registry.register(_Snapshot(lag))

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``host:port`` in a thread (port 0: any free one); the port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self.port = int(server.server_port)
        log.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port


class TrainerMetrics(WorkerMetrics):
    """The trainer's metrics (see the module docstring and the README's Monitoring section)."""

    SKIP_REASONS = ("replayed", "duplicate_join")
    #: What a trainer publishes (:class:`trainers.trainer.Promotion`'s kinds).
    PROMOTION_KINDS = ("initial", "challenger", "refresh", "canary", "shadow")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("trainer", registry)
        self._learned = Counter(
            "driftline_events_learned_total",
            "Labeled events the trainer learned, per model.",
            ["model"],
            registry=self.registry,
        )
        self._learned_by_model: dict[str, Any] = {}
        self._promotions = Counter(
            "driftline_promotions_total",
            "Model versions the trainer published to the registry, by kind (initial, challenger, "
            "refresh, canary, shadow).",
            ["model", "kind"],
            registry=self.registry,
        )
        self._checkpoint = Histogram(
            "driftline_checkpoint_duration_seconds",
            "Time of one checkpoint: flushing the outbox, saving the partitions' snapshots to "
            "Redis, acknowledging their events.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._checkpoints = Counter(
            "driftline_checkpoints_total",
            "Checkpoints attempted, by outcome (saved, or deferred because Redis is away).",
            ["outcome"],
            registry=self.registry,
        )
        self._last_checkpoint = Gauge(
            "driftline_last_checkpoint_timestamp_seconds",
            "Unix time of the last checkpoint saved.",
            registry=self.registry,
        )
        self._reports: dict[str, dict[str, Any]] = {}
        self.registry.register(_Snapshot(self._report_families))

    def expect(self, models: Iterable[str]) -> None:
        super().expect(models)
        for model in models:
            self._learned.labels(model)
            for kind in self.PROMOTION_KINDS:
                self._promotions.labels(model, kind)
        for outcome in ("saved", "deferred"):
            self._checkpoints.labels(outcome)

    def learned(self, model: str, events: int = 1) -> None:
        child = self._learned_by_model.get(model)
        if child is None:
            child = self._learned_by_model[model] = self._learned.labels(model)
        child.inc(events)

    def promoted(self, model: str, kind: str) -> None:
        self._promotions.labels(model, kind).inc()

    def checkpointed(self, seconds: float, saved: bool) -> None:
        self._checkpoint.observe(seconds)
        self._checkpoints.labels("saved" if saved else "deferred").inc()
        if saved:
            self._last_checkpoint.set(time.time())

    def watch_outbox(self, waiting: Callable[[], int], since_checkpoint: Callable[[], int]) -> None:
        """Gauges read at scrape time: promotions waiting on Redis, events since the checkpoint."""
        Gauge(
            "driftline_promotions_waiting",
            "Promotions whose artifact could not be stored in Redis yet (they wait, in order).",
            registry=self.registry,
        ).set_function(waiting)
        Gauge(
            "driftline_events_since_checkpoint",
            "Events learned since the last checkpoint (replayed after a crash).",
            registry=self.registry,
        ).set_function(since_checkpoint)

    def report(self, report: dict[str, Any]) -> None:
        """Take in a model's report (:meth:`trainers.trainer.ModelTrainer.report`)."""
        self._reports = {**self._reports, report["model"]: report}

    def _report_families(self) -> Iterable[Metric]:
        rolling = GaugeMetricFamily(
            "driftline_candidate_rolling_metric",
            "Each candidate's prequential metric over the model's window.",
            labels=["model", "candidate", "metric"],
        )
        cumulative = GaugeMetricFamily(
            "driftline_candidate_cumulative_metric",
            "Each candidate's prequential metric over every event it scored.",
            labels=["model", "candidate", "metric"],
        )
        learned = CounterMetricFamily(
            "driftline_candidate_events_learned",
            "Events each candidate learned since it started (kept across restarts).",
            labels=["model", "candidate"],
        )
        quarantined = GaugeMetricFamily(
            "driftline_candidate_quarantined",
            "1 for a quarantined candidate (it stopped learning and competing), else 0.",
            labels=["model", "candidate"],
        )
        champion = GaugeMetricFamily(
            "driftline_champion_version",
            "The version serving each model as the trainer knows it, labelled with its candidate.",
            labels=["model", "candidate"],
        )
        for model, report in sorted(self._reports.items()):
            for name, scores in report["candidates"].items():
                for metric, value in _levels(scores["rolling"]):
                    rolling.add_metric([model, name, metric], value)
                for metric, value in _levels(scores["cumulative"]):
                    cumulative.add_metric([model, name, metric], value)
                learned.add_metric([model, name], scores["n"])
                quarantined.add_metric([model, name], float(name in report["quarantined"]))
            if report["version"] is not None:
                champion.add_metric([model, str(report["champion"])], report["version"])
        return [rolling, cumulative, learned, quarantined, champion]


class ScorerMetrics(WorkerMetrics):
    """The scoring worker's metrics (see the module docstring and the README)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("scorer", registry)
        self._predictions = Counter(
            "driftline_predictions_total",
            "Predictions published, by model, version and arm (stable, canary, shadow).",
            ["model", "version", "arm"],
            registry=self.registry,
        )
        self._predicted: dict[tuple[str, int, str], Any] = {}
        self._latency = Histogram(
            "driftline_prediction_latency_seconds",
            "From an unlabeled event handed to the scorer to its predictions acknowledged "
            "(scored, committed to Redis, published).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._swaps = Counter(
            "driftline_model_swaps_total",
            "Versions the scorer started serving without a restart, by model and role (stable, "
            "trial).",
            ["model", "role"],
            registry=self.registry,
        )
        self._refusals = Counter(
            "driftline_artifact_refusals_total",
            "Artifacts refused because their digest or signature did not verify.",
            ["model"],
            registry=self.registry,
        )
        self._decisions = Counter(
            "driftline_guardrail_decisions_total",
            "Registry records the live guardrail published, by kind (rollout, rollback, alert).",
            ["model", "kind"],
            registry=self.registry,
        )
        self._live: list[dict[str, Any]] = []
        self._pending = 0
        self._serving: Callable[[], Iterable[tuple[str, str, int]]] = lambda: ()
        self.registry.register(_Snapshot(self._live_families))

    #: What the live guardrail decides (:mod:`trainers.guardrail`).
    DECISIONS = (ROLLOUT, ROLLBACK, ALERT)

    def expect(self, models: Iterable[str]) -> None:
        super().expect(models)
        for model in models:
            self._refusals.labels(model)
            for kind in self.DECISIONS:
                self._decisions.labels(model, kind)
            for role in ("stable", "trial"):
                self._swaps.labels(model, role)

    def predicted(self, model: str, version: int, arm: str) -> None:
        key = (model, version, arm)
        child = self._predicted.get(key)
        if child is None:
            child = self._predicted[key] = self._predictions.labels(model, str(version), arm)
        child.inc()

    def acknowledged(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def swapped(self, model: str, role: str) -> None:
        self._swaps.labels(model, role).inc()

    def refused(self, model: str) -> None:
        self._refusals.labels(model).inc()

    def decided(self, model: str, kind: str) -> None:
        self._decisions.labels(model, kind).inc()

    def watch_serving(self, serving: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        """Read (model, arm, version) of what serves at scrape time."""
        self._serving = serving

    def live(self, reports: list[dict[str, Any]], pending: int) -> None:
        """Take in the join's live reports (:meth:`streams.workers.join.Joiner.reports`) and
        the number of predictions and outcomes waiting for their other half."""
        self._live, self._pending = reports, pending

    def _live_families(self) -> Iterable[Metric]:
        serving = GaugeMetricFamily(
            "driftline_serving_version",
            "The version the scorer serves per model and arm (stable, canary, shadow).",
            labels=["model", "arm"],
        )
        for model, arm, version in self._serving():
            serving.add_metric([model, arm], version)
        rolling = GaugeMetricFamily(
            "driftline_live_rolling_metric",
            "A served version's metric on joined outcomes, over the model's window.",
            labels=["model", "version", "arm", "metric"],
        )
        cumulative = GaugeMetricFamily(
            "driftline_live_cumulative_metric",
            "A served version's metric on every joined outcome.",
            labels=["model", "version", "arm", "metric"],
        )
        joined = CounterMetricFamily(
            "driftline_live_joined",
            "Predictions joined to their outcome, per served version and arm.",
            labels=["model", "version", "arm"],
        )
        expired = CounterMetricFamily(
            "driftline_join_expired",
            "Predictions whose outcome never came within the label horizon.",
            labels=["model"],
        )
        unmatched = CounterMetricFamily(
            "driftline_join_unmatched",
            "Outcomes whose prediction never came within the label horizon (dead-lettered).",
            labels=["model"],
        )
        pending = GaugeMetricFamily(
            "driftline_join_pending",
            "Predictions and outcomes waiting for their other half.",
            value=self._pending,
        )
        per_model: dict[str, tuple[int, int]] = {}
        for live in self._live:
            labels = [live["model"], str(live["version"]), live["arm"]]
            for metric, value in _levels(live["metrics"].get("rolling")):
                rolling.add_metric([*labels, metric], value)
            for metric, value in _levels(live["metrics"].get("cumulative")):
                cumulative.add_metric([*labels, metric], value)
            joined.add_metric(labels, live["joined"])
            # A model's counts are kept per partition, and a model lives in one partition.
            per_model[live["model"]] = (live["expired"], live["unmatched"])
        for model, (gone, orphans) in sorted(per_model.items()):
            expired.add_metric([model], gone)
            unmatched.add_metric([model], orphans)
        return [serving, rolling, cumulative, joined, expired, unmatched, pending]


def register_target(sd_dir: Path, *, job: str, port: int, labels: Mapping[str, str]) -> Path:
    """Add this process to Prometheus's file-based service discovery in ``sd_dir``.

    One file per process, ``JOB-PID.json``, written whole by a rename (Prometheus watches the
    folder and must never read half a file) and removed when the process exits normally: a
    worker stopped on purpose leaves the targets, one that crashed stays as a target that is
    down, which is what the worker-down alert is for.
    """
    sd_dir.mkdir(parents=True, exist_ok=True)
    path = sd_dir / f"{job}-{os.getpid()}.json"
    group = [{"targets": [f"127.0.0.1:{port}"], "labels": {"job": job, **labels}}]
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(group))
    temporary.replace(path)
    atexit.register(path.unlink, missing_ok=True)
    log.info("registered for Prometheus in %s", path)
    return path
