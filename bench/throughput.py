"""Every throughput figure of driftline in one command and one table, as ratios measured in one run.

Each row's baseline is measured in the same run as the row, so a ratio shares the machine's load
(the absolute rates do not travel between machines; the ratios roughly do):

1. **end to end**: one trainer worker on the benchmark's model (``throughput.toml``: logistic
   regression champion and one challenger, 10 features) fed by the producer SDK's batch records,
   next to the same candidates learning the same events in-process; then the same with
   single-event records (kcat's form), next to a faust agent that does nothing on that topic;
2. **scale-out**: 1, 2 and 4 workers on 8 models, one per partition of an 8-partition topic;
3. **memory**: the RSS of one worker sampled while it learns ``--long-events`` events (a PNG
   curve with ``--plot``), and whether it stays within 5% of its median after warm-up;
4. **restart**: from SIGKILL of that worker to the first event learned by its successor, with
   its checkpoint of ``--long-events`` events behind it; the snapshot's size and the time to
   read (claim) and restore it, in-process;
5. **scorer**: ``driftline score`` on events to score, in the SDK's batch records and in
   single-event records, each next to in-process prediction by the same version;
6. **slow candidate**: the benchmark's model with an adaptive random forest challenger added,
   in-process, next to the model without it.

A worker's rate is read from its Prometheus counters (events learned, predictions), from 10%
to 90% of the events, so that start-up, group joins and the tail are left out. Each rate is given
per second of wall-clock time and per second of CPU time (every thread of the worker's process,
against the in-process loop's): on a shared machine the wall-clock ratio depends on the share of
the cores the other processes leave, the CPU ratio much less. The end-to-end rows are medians of
``--repeat`` rounds, each with its own in-process baseline.

    .venv/bin/python bench/throughput.py [--events 200000] [--repeat 3] [--scale-events 50000]
        [--long-events 1000000] [--score-events 50000] [--plot docs/memory-trainer.png]

Uses KAFKA_BOOTSTRAP_SERVERS / REDIS_URL when set, else starts a local stack for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from kafka.partitioner.default import murmur2
from pipeline_throughput import faust_ceiling, services

from streams.admin import ensure_topics
from streams.config import load_config
from streams.registry.artifacts import Artifact
from streams.registry.records import read_registry
from streams.sdk.producer import EventProducer
from streams.sdk.replay import from_drift
from streams.stack.process import free_port
from streams.topics import Topics
from streams.workers.checkpoint import read_checkpoint
from trainers.spec import ModelSpec
from trainers.trainer import ModelTrainer

CONFIG = Path(__file__).with_name("throughput.toml")
SIGNING_KEY = "bench"
SCALE_PARTITIONS = 8
WINDOW = (0.1, 0.9)
"""The share of a run's events between which a worker's rate is measured."""


def drift_stream(model: str, events: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """The benchmark's events: 10 features, a drift half way."""
    return from_drift("hyperplane", model=model, events=events, drift_at=events // 2, seed=seed)


def drift_events(model: str, events: int, seed: int = 1) -> list[dict[str, Any]]:
    return list(drift_stream(model, events, seed))


@dataclass
class Deployment:
    """One run's topics, Redis keys and consumer group, and the driftline processes it runs."""

    bootstrap: str
    redis_url: str
    config: Path = CONFIG
    overrides: dict[str, str] = field(default_factory=dict)
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "REDIS_URL": self.redis_url,
            "DRIFTLINE_SIGNING_KEY": SIGNING_KEY,
            "DRIFTLINE_TOPIC_PREFIX": f"bench-{self.run}.",
            "DRIFTLINE_REDIS_PREFIX": f"bench-{self.run}:",
            "DRIFTLINE__worker__group": f"bench-{self.run}",
            **self.overrides,
        }

    @property
    def topics(self) -> Topics:
        return Topics.from_prefix(f"bench-{self.run}.")

    @property
    def kafka(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap}

    def create_topics(self) -> None:
        partitions = load_config(self.config, self.env).worker.partitions
        ensure_topics(self.topics, self.kafka, partitions=partitions)

    def send(
        self, events: Iterable[dict[str, Any]], *, batched: bool, unlabeled: bool = False
    ) -> None:
        """Produce ``events`` through the SDK: in full batch records, or one record each."""
        self.create_topics()
        options: dict[str, Any] = {"batch_linger": 3600} if batched else {"batch_events": 1}
        with EventProducer(
            topic=self.topics.labeled,
            unlabeled_topic=self.topics.unlabeled,
            **options,
            **self.kafka,
        ) as producer:
            for event in events:
                if unlabeled:
                    producer.send_unlabeled({k: v for k, v in event.items() if k != "label"})
                else:
                    producer.send(event)
            producer.flush()

    def start(self, *args: str) -> Worker:
        port = free_port()
        command = [sys.executable, "-m", "streams.cli.main", *args, "--config", str(self.config)]
        process = subprocess.Popen(
            [*command, "--metrics-port", str(port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        return Worker(process, port)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
            if process.poll() is None:
                process.kill()
                process.wait()
        self.processes.clear()


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    port: int

    def counted(self, metric: str) -> float:
        """The sum of a counter's series on this worker's /metrics (0 until it serves them)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/metrics", timeout=1
            ) as response:
                text = response.read().decode()
        except OSError:
            return 0.0
        return sum(float(value) for value in re.findall(rf"^{metric}{{.*}} (\S+)$", text, re.M))

    def cpu_seconds(self) -> float:
        """CPU time the worker's process has used, every thread of it."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.findall(r"VmRSS:\s+(\d+)", status)[0]) / 1024


@dataclass(frozen=True)
class Rate:
    """Events per second of wall-clock time, and per second of CPU time used."""

    wall: float
    cpu: float


def rate(
    workers: list[Worker],
    metric: str,
    total: int,
    *,
    every: float = 0.5,
    on_sample: Callable[[float, float], None] | None = None,
    timeout: float = 1800,
) -> Rate:
    """The rate of ``workers`` together, between WINDOW's shares of ``total`` events.

    On a shared machine the CPU rate is the steadier figure: the wall-clock rate depends on the
    share of the cores the other processes leave. The rate is taken between two samples of the
    counters, so sampling ``every`` half second loses no precision, and each sample (a scrape
    of every worker's /metrics, which holds the worker's GIL) costs the workers less than at
    10 per second.
    """
    low, high = WINDOW[0] * total, WINDOW[1] * total
    start: tuple[float, float, float] | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.perf_counter()
        counts = [worker.counted(metric) for worker in workers]
        done = sum(counts)
        if on_sample is not None:
            on_sample(now, done)
        # Not before every worker has its partitions: the first to join works alone until then.
        if start is None and done >= low and all(counts):
            start = (now, done, sum(worker.cpu_seconds() for worker in workers))
        if start is not None and done >= high:
            cpu = sum(worker.cpu_seconds() for worker in workers) - start[2]
            return Rate((done - start[1]) / (now - start[0]), (done - start[1]) / cpu)
        if any(worker.process.poll() is not None for worker in workers):
            raise RuntimeError("a worker exited early")
        time.sleep(every)
    raise TimeoutError(f"{metric} did not reach {high:.0f} in {timeout:.0f} s")


LEARNED = "driftline_events_learned_total"
PREDICTED = "driftline_predictions_total"


def in_process_rate(spec: ModelSpec, events: list[dict[str, Any]]) -> Rate:
    trainer = ModelTrainer(spec)
    started, cpu = time.perf_counter(), time.process_time()
    for position, event in enumerate(events):
        trainer.learn(event["features"], event["label"], source="bench", position=position)
    return Rate(
        len(events) / (time.perf_counter() - started),
        len(events) / (time.process_time() - cpu),
    )


@dataclass
class EndToEnd:
    in_process: list[Rate] = field(default_factory=list)
    batched: list[Rate] = field(default_factory=list)
    single: list[Rate] = field(default_factory=list)
    faust_noop: list[float] = field(default_factory=list)


def end_to_end(
    bootstrap: str, redis_url: str, events: list[dict[str, Any]], repeat: int
) -> EndToEnd:
    """``repeat`` rounds of: in-process, a worker on batch records, one on single records."""
    spec = load_config(CONFIG).models["bench"]
    figures = EndToEnd()
    for _ in range(repeat):
        figures.in_process.append(in_process_rate(spec, events))
        for rates, batched in ((figures.batched, True), (figures.single, False)):
            deployment = Deployment(bootstrap, redis_url)
            deployment.send(events, batched=batched)
            try:
                rates.append(rate([deployment.start("worker")], LEARNED, len(events)))
            finally:
                deployment.stop()
        figures.faust_noop.append(faust_ceiling(deployment.topics.labeled, len(events), bootstrap))
    return figures


def partition_names(partitions: int) -> list[str]:
    """One model name per partition, as Kafka's default (murmur2) partitioner places keys."""
    names: dict[int, str] = {}
    suffix = 0
    while len(names) < partitions:
        name = f"bench-{suffix}"
        names.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % partitions, name)
        suffix += 1
    return [names[partition] for partition in range(partitions)]


def scale_config(directory: Path) -> Path:
    """throughput.toml's model under 8 names, one per partition of an 8-partition topic."""
    text = CONFIG.read_text().replace("partitions = 1", f"partitions = {SCALE_PARTITIONS}")
    model = text[text.index("[models.bench]") :]
    header = text[: text.index("[models.bench]")]
    sections = [
        model.replace("models.bench", f'models."{name}"')
        for name in partition_names(SCALE_PARTITIONS)
    ]
    path = directory / "scale.toml"
    path.write_text(header + "\n".join(sections))
    return path


def scale_out(bootstrap: str, redis_url: str, per_model: int, directory: Path) -> dict[int, Rate]:
    config = scale_config(directory)
    names = partition_names(SCALE_PARTITIONS)
    events = [
        event
        for index, name in enumerate(names)
        for event in drift_events(name, per_model, seed=index)
    ]
    figures: dict[int, Rate] = {}
    for workers in (1, 2, 4):
        deployment = Deployment(bootstrap, redis_url, config=config)
        deployment.send(events, batched=True)
        try:
            started = [deployment.start("worker") for _ in range(workers)]
            figures[workers] = rate(started, LEARNED, len(events))
        finally:
            deployment.stop()
    return figures


@dataclass
class LongRun:
    samples: list[tuple[float, float, float]]
    """(seconds, events learned, RSS MiB) of the worker as it learned."""
    flat: float
    """The largest deviation of RSS from its median after warm-up, as a share of the median."""
    restart_seconds: float
    snapshot_bytes: int
    claim_seconds: float
    restore_seconds: float


def long_run(bootstrap: str, redis_url: str, total: int) -> LongRun:
    """Memory over ``total`` events, then a SIGKILL and the restart on top of that checkpoint."""
    # The restarted worker takes its predecessor's static membership over at once (KIP-345).
    static = {"DRIFTLINE__worker__instance_id": "bench-0"}
    deployment = Deployment(bootstrap, redis_url, overrides=static)
    deployment.send(drift_stream("bench", total), batched=True)
    samples: list[tuple[float, float, float]] = []
    try:
        worker = deployment.start("worker")
        began = time.perf_counter()

        def sample(now: float, done: float) -> None:
            samples.append((now - began, done, worker.rss_mib()))

        rate([worker], LEARNED, total, every=0.5, on_sample=sample)
        while (learned := worker.counted(LEARNED)) < total:
            sample(time.perf_counter(), learned)
            time.sleep(0.5)
        # Every event learned: let a checkpoint hold them all before the kill.
        time.sleep(2 * load_config(CONFIG).worker.checkpoint_interval + 1)
        deployment.send(drift_stream("bench", 10_000, seed=3), batched=True)
        worker.process.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        worker.process.wait()
        successor = deployment.start("worker")
        while successor.counted(LEARNED) < 1:
            if successor.process.poll() is not None:
                raise RuntimeError("the restarted worker exited")
            time.sleep(0.02)
        restart = time.perf_counter() - killed
    finally:
        deployment.stop()
    warm = [rss for _, done, rss in samples if done >= WINDOW[0] * total]
    median = statistics.median(warm)
    client = redis.Redis.from_url(redis_url)
    claimed = time.perf_counter()
    _, snapshots = read_checkpoint(
        client,
        prefix=f"bench-{deployment.run}:",
        group=f"bench-{deployment.run}",
        topic=deployment.topics.labeled,
        partition=0,
    )
    claim = time.perf_counter() - claimed
    restored = time.perf_counter()
    ModelTrainer.restore(snapshots["bench"], load_config(CONFIG).models["bench"])
    return LongRun(
        samples=samples,
        flat=max(abs(rss - median) for rss in warm) / median,
        restart_seconds=restart,
        snapshot_bytes=len(snapshots["bench"]),
        claim_seconds=claim,
        restore_seconds=time.perf_counter() - restored,
    )


def plot(samples: list[tuple[float, float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 3.5))
    axis.plot([done for _, done, _ in samples], [rss for _, _, rss in samples])
    axis.set_xlabel("events learned")
    axis.set_ylabel("RSS (MiB)")
    axis.set_ylim(bottom=0)
    axis.set_title("Trainer worker memory (bench/throughput.py)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


@dataclass(frozen=True)
class Scoring:
    in_process: list[Rate]
    """In-process prediction, measured before each scorer's run."""
    batched: Rate
    single: Rate


def scorer(bootstrap: str, redis_url: str, events: list[dict[str, Any]]) -> Scoring:
    """``driftline score`` on batch records (the SDK's default), then on single-event records
    (kcat's form), each next to in-process prediction by the version it serves."""
    in_batched, batched = score_run(bootstrap, redis_url, events, batched=True)
    in_single, single = score_run(bootstrap, redis_url, events, batched=False)
    return Scoring([in_batched, in_single], batched, single)


def score_run(
    bootstrap: str, redis_url: str, events: list[dict[str, Any]], *, batched: bool
) -> tuple[Rate, Rate]:
    """In-process prediction, and ``driftline score``, of ``events`` by a version issued first."""
    deployment = Deployment(bootstrap, redis_url)
    warmup = drift_events("bench", 5_000, seed=2)
    deployment.send(warmup, batched=True)
    try:
        trainer = deployment.start("worker")
        while trainer.counted(LEARNED) < len(warmup):
            time.sleep(0.2)
        deployment.stop()
        versions = list(read_registry(deployment.topics.registry, deployment.kafka, key=b"bench"))
        stable = versions[-1]
        blob = redis.Redis.from_url(redis_url).get(stable.artifact.key)
        assert isinstance(blob, bytes)
        model = Artifact(blob, stable.artifact).load(
            model="bench", version=stable.version, key=SIGNING_KEY.encode()
        )
        started, cpu = time.perf_counter(), time.process_time()
        for event in events:
            model.predict_proba_one(event["features"])
        in_process = Rate(
            len(events) / (time.perf_counter() - started),
            len(events) / (time.process_time() - cpu),
        )
        deployment.send(events, batched=batched, unlabeled=True)
        scored = rate([deployment.start("score")], PREDICTED, len(events))
    finally:
        deployment.stop()
    return in_process, scored


def slow_candidate(events: list[dict[str, Any]]) -> dict[str, Rate]:
    table = tomllib.loads(CONFIG.read_text())["models"]["bench"]
    forest = {"name": "forest", "river": "forest.ARFClassifier"}
    with_forest = {**table, "candidates": [*table["candidates"], forest]}
    return {
        "without": in_process_rate(ModelSpec.from_dict("bench", table), events),
        "with": in_process_rate(ModelSpec.from_dict("bench", with_forest), events),
    }


def median(rates: list[Rate]) -> Rate:
    return Rate(statistics.median(r.wall for r in rates), statistics.median(r.cpu for r in rates))


def row(name: str, measured: Rate, baseline: Rate, goal: str = "") -> str:
    wall, cpu = measured.wall / baseline.wall, measured.cpu / baseline.cpu
    return f"{name:40} {measured.wall:>10,.0f} {wall:>7.2f} {cpu:>7.2f} {goal:>8}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="end to end")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the end-to-end rows")
    parser.add_argument("--scale-events", type=int, default=50_000, help="per model, 8 models")
    parser.add_argument("--long-events", type=int, default=1_000_000, help="memory, restart")
    parser.add_argument("--score-events", type=int, default=50_000, help="scorer")
    parser.add_argument("--slow-events", type=int, default=5_000, help="slow candidate")
    parser.add_argument("--plot", type=Path, default=None, help="write the memory curve here")
    args = parser.parse_args()
    events = drift_events("bench", args.events)
    loads = [os.getloadavg()[0]]
    with services() as (bootstrap, redis_url), tempfile.TemporaryDirectory() as scratch:
        e2e = end_to_end(bootstrap, redis_url, events, args.repeat)
        loads.append(os.getloadavg()[0])
        scale = scale_out(bootstrap, redis_url, args.scale_events, Path(scratch))
        loads.append(os.getloadavg()[0])
        long = long_run(bootstrap, redis_url, args.long_events)
        loads.append(os.getloadavg()[0])
        scoring = scorer(bootstrap, redis_url, events[: args.score_events])
        slow = slow_candidate(events[: args.slow_events])
        loads.append(os.getloadavg()[0])
    if args.plot is not None:
        plot(long.samples, args.plot)
    baseline = median(e2e.in_process)
    noop = statistics.median(e2e.faust_noop)
    memory = statistics.median(rss for *_, rss in long.samples)
    scoring_baseline = median(scoring.in_process)
    print(f"{os.cpu_count()} cores; load average (1 min) " + ", ".join(f"{x:.1f}" for x in loads))
    print(f"end-to-end rows: medians of {args.repeat} rounds of {args.events:,} events")
    print(f"{'':40} {'ev/s':>10} {'wall':>7} {'CPU':>7} {'goal':>8}")
    lines = [
        row("in-process trainer (baseline)", baseline, baseline),
        row("worker, batch records (SDK)", median(e2e.batched), baseline, ">= 0.8"),
        row("worker, single-event records", median(e2e.single), baseline),
        f"{'faust no-op agent, single records':40} {noop:>10,.0f} {noop / baseline.wall:>7.2f}",
        *(
            row(f"scale-out: {n} worker(s), 8 models", scale[n], scale[1], ">= 1.8" * (n == 2))
            for n in (1, 2, 4)
        ),
        f"{f'memory over {args.long_events:,} events (MiB)':40} {memory:>10,.0f} "
        f"{f'±{long.flat:.1%}':>15} {'±5%':>8}",
        f"{f'restart, {args.long_events:,}-event checkpoint (s)':40} "
        f"{long.restart_seconds:>10.1f} {'':>15} {'< 10 s':>8}",
        f"{'  snapshot (bytes), claim / restore (ms)':40} {long.snapshot_bytes:>10,} "
        f"{f'{long.claim_seconds * 1000:.1f} / {long.restore_seconds * 1000:.1f}':>15}",
        row("in-process prediction (baseline)", scoring_baseline, scoring_baseline),
        row("driftline score, batch records (SDK)", scoring.batched, scoring_baseline),
        row("driftline score, single-event records", scoring.single, scoring_baseline),
        row("in-process trainer, + ARF challenger", slow["with"], slow["without"]),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
