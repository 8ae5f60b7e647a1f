"""``driftline``: the command line of the local stack, the workers and the registry.

A mistake of the user's (a setting, a file, an unreachable broker) ends a command with one line
on stderr and exit status 2 (:func:`streams.cli.common.refuse`), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.cli.common import refuse

if TYPE_CHECKING:
    from streams.durability import Durability

Handler = Callable[[argparse.Namespace], int]

# faust's own setting for the folder of its local state (which driftline keeps in memory).
_FAUST_DATADIR_ENV = "APP_DATADIR"

# How long a thread waiting for the GIL lets the running one keep it (Python's default: 5 ms).
# faust runs aiokafka's consumer in a thread of its own, which needs the GIL at every step of a
# fetch while the main thread learns without pause (the convoy effect: Beazley, "Understanding
# the Python GIL", 2010). With a bounded stream buffer (streams.workers.app) a worker then waited
# on its fetches: a 200,000-event backlog took 22.0 s at 5 ms, 17.2 s at 0.5 ms, for the same
# CPU time (64 records buffered; bench/throughput.py's deployment, medians of 2-3 runs).
_GIL_SWITCH_SECONDS = 0.0005


def _stack(args: argparse.Namespace) -> int:
    from streams.stack import LocalStack, StackError

    stack = LocalStack(args.state_dir)
    if (args.action == "node") != (args.drill is not None):
        return refuse(f"stack {args.action}", "usage: driftline stack node stop|kill|start ID")
    try:
        if args.action == "up":
            endpoints = stack.up(
                kafka_port=args.kafka_port,
                redis_port=args.redis_port,
                with_prometheus=args.with_prometheus,
                secure=args.secure,
                brokers=args.brokers,
            )
            print(endpoints.shell_lines())
            for role, env_file in (endpoints.env_files or {}).items():
                print(f"# the {role}'s environment: . {env_file}", file=sys.stderr)
        elif args.action == "node":
            return _stack_node(stack, args)
        elif args.action == "status":
            report = stack.status()
            if not report:
                print("the local stack is not running", file=sys.stderr)
                return 1
            print(json.dumps(report, indent=2))
            return 0 if all(s["answers"] for s in report.values()) else 1
        else:
            for line in stack.down(keep_data=args.keep_data, timeout=args.timeout):
                print(line, file=sys.stderr)
    except StackError as error:
        return refuse(f"stack {args.action}", error)
    return 0


def _stack_node(stack: Any, args: argparse.Namespace) -> int:
    """``driftline stack node stop|kill|start ID``: a fault drill on one Kafka node.

    ``--leader-of TOPIC:PARTITION`` or ``--controller`` name the node to stop or kill by its
    role, as the cluster sees it right now, instead of by id.
    """
    from streams.stack import cluster

    chosen = [args.node_id is not None, args.leader_of is not None, args.controller]
    if sum(chosen) != 1:
        return refuse(
            "stack node", "name one node: an ID, --leader-of TOPIC:PARTITION or --controller"
        )
    if args.drill == "start" and args.node_id is None:
        return refuse("stack node", "start takes a node ID")
    node_id = args.node_id
    nodes = stack.node_ids()
    if not nodes:
        return refuse("stack node", f"the local stack at {stack.state_dir} is not running")
    bootstrap = ",".join(stack.bootstrap_of(node) for node in nodes)
    kafka = {"bootstrap_servers": bootstrap, **stack.admin_settings()}
    if args.controller:
        node_id = cluster.active_controller(kafka)
    elif args.leader_of is not None:
        topic, _, partition = args.leader_of.rpartition(":")
        if not topic or not partition.isdigit():
            return refuse(
                "stack node", f"--leader-of wants TOPIC:PARTITION, not {args.leader_of!r}"
            )
        node_id = cluster.partition_leader(kafka, topic, int(partition))
    if args.drill == "start":
        stack.start_node(node_id)
        print(f"kafka node {node_id} answers at {stack.bootstrap_of(node_id)}", file=sys.stderr)
    else:
        stack.stop_node(node_id, kill=args.drill == "kill", timeout=args.timeout)
        done = "killed" if args.drill == "kill" else "stopped"
        print(f"kafka node {node_id} {done}", file=sys.stderr)
    return 0


def _run_faust_worker(
    args: argparse.Namespace, create_app: Callable[..., Any], metrics: Any, **options: Any
) -> int:
    """Create and check the topics, then run a faust app built by ``create_app`` until it is
    stopped.

    The topics are checked at every start (:func:`streams.admin.ensure_topics`): a topic the
    worker must not run on refuses the start in one line, a lesser finding is logged as a
    warning; the app is built with the topic settings resolved against the cluster. So is Redis
    (:func:`streams.durability.check_server`): one that may evict keys, or cannot wait as
    ``[redis] durability`` asks, refuses the start.
    ``metrics`` (a :class:`streams.metrics.WorkerMetrics`, None with ``--no-metrics``) is
    served on ``--metrics-port`` and registered for Prometheus when a discovery folder is set.
    """
    import dataclasses
    import logging

    import mode.loop

    from streams.admin import ensure_topics
    from streams.config import load_config
    from streams.settings import Settings, SettingsError
    from trainers.errors import ConfigError

    # faust's per-event overhead dominates a worker; uvloop cuts it by about a fifth.
    mode.loop.use("uvloop")
    sys.setswitchinterval(_GIL_SWITCH_SECONDS)
    try:
        config = load_config(args.config)
        settings = Settings.from_env()
        kafka = settings.kafka
        # Before Kafka: a worker refused for its Redis creates no topic.
        redis_warnings = _check_redis(settings.redis_url, config.redis.wait)
        checked = ensure_topics(
            config.topics,
            kafka,
            config.topic_settings,
            signing_key=settings.signing_key(),
            models=config.models,
        )
    except (SettingsError, ConfigError) as error:  # ConfigError: a bad model in the file
        return refuse(args.command, error)
    for warning in [*checked.warnings, *redis_warnings]:
        logging.getLogger("driftline.worker").warning(warning)
    config = dataclasses.replace(config, topic_settings=checked.settings)
    # faust makes an empty "<group>-data" folder in the working directory even with in-memory
    # tables: give it a temporary one instead (unless the user chose where, with APP_DATADIR).
    with tempfile.TemporaryDirectory(prefix="driftline-faust-") as datadir:
        chosen = _FAUST_DATADIR_ENV in os.environ
        os.environ.setdefault(_FAUST_DATADIR_ENV, datadir)
        try:
            app = create_app(config, settings, metrics=metrics, **options)
        except (SettingsError, ConfigError) as error:
            return refuse(args.command, error)
        finally:
            if not chosen:
                del os.environ[_FAUST_DATADIR_ENV]
        if metrics is not None:
            try:
                _serve_metrics(args, metrics, group=app.app.conf.id)
            except OSError as error:
                return refuse(args.command, f"cannot serve metrics: {error}")
        app.run(log_level=args.log_level)
    return 0


def _check_redis(url: str, durability: Durability) -> list[str]:
    """:func:`streams.durability.check_server` of the Redis at ``url``: its warnings."""
    import redis

    from streams.durability import check_server

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return check_server(client, durability)
    finally:
        client.close()


def _serve_metrics(args: argparse.Namespace, metrics: Any, *, group: str) -> None:
    from streams.metrics import SD_DIR_ENV, register_target

    port = metrics.serve(args.metrics_port, args.metrics_address)
    # stderr, like faust's log: a parent that reads the worker's output learns the port there.
    print(f"metrics on http://{args.metrics_address}:{port}/metrics", file=sys.stderr)
    sd_dir = args.metrics_sd_dir or os.environ.get(SD_DIR_ENV)
    if sd_dir:
        register_target(
            Path(sd_dir), job=f"driftline-{metrics.role}", port=port, labels={"group": group}
        )


def _worker(args: argparse.Namespace) -> int:
    from streams.metrics import TrainerMetrics
    from streams.workers.trainer import create_app

    metrics = None if args.no_metrics else TrainerMetrics()
    return _run_faust_worker(
        args, create_app, metrics, reset_candidates=frozenset(args.reset_candidate)
    )


def _score(args: argparse.Namespace) -> int:
    from streams.metrics import ScorerMetrics
    from streams.workers.scorer import create_app

    metrics = None if args.no_metrics else ScorerMetrics()
    return _run_faust_worker(args, create_app, metrics, max_wait=args.max_wait, group=args.group)


def _add_metrics_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics on this port (default 0: any free port, logged)",
    )
    parser.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        help="address the metrics server binds (0.0.0.0 in a container)",
    )
    parser.add_argument(
        "--metrics-sd-dir",
        type=Path,
        default=None,
        help="register this worker for Prometheus's file-based service discovery in this folder "
        "(default: $DRIFTLINE_METRICS_SD_DIR, which `stack up --with-prometheus` exports)",
    )
    parser.add_argument("--no-metrics", action="store_true", help="serve no metrics at all")


def _registry(args: argparse.Namespace) -> int:
    from streams.registry.cli import run

    return run(args)


def _tail(args: argparse.Namespace) -> int:
    from streams.cli.tail import run

    return run(args)


def _produce(args: argparse.Namespace) -> int:
    import functools
    import time

    from kafka.errors import KafkaError
    from rich.progress import Progress

    from streams.cli.common import require_broker
    from streams.contract import InvalidEvent
    from streams.sdk import replay
    from streams.sdk.outcomes import OutcomeScheduler
    from streams.sdk.producer import DeliveryError, EventProducer, ProducerConfigError
    from streams.settings import Settings, SettingsError

    if args.file:
        events = replay.from_file(args.file, model=args.model, label=args.label)
    elif args.dataset:
        events = replay.from_dataset(args.dataset, model=args.model)
    else:
        events = replay.from_drift(
            args.synthetic,
            model=args.model,
            events=args.events,
            drift_at=args.drift_at,
            width=args.width,
            seed=args.seed,
            noise=args.noise,
        )
    sent = 0
    scheduler: OutcomeScheduler | None = None
    try:
        settings = Settings.from_env()
        require_broker(settings.kafka)
        producer = EventProducer(settings=settings)
        send = functools.partial(_SENDERS[args.kind], producer)
        submit: Callable[[dict[str, Any]], object] = send
        sleep: Callable[[float], None] = time.sleep
        if args.outcomes:
            scheduler = OutcomeScheduler(
                args.outcome_timing, send_event=send, send_outcome=producer.send_outcome
            )
            submit, sleep = scheduler.submit, scheduler.sleep
        with (
            producer,
            Progress(transient=True, disable=args.quiet) as progress,
        ):
            task = progress.add_task(f"producing {args.model} ({args.kind})", total=args.events)
            for event in replay.paced(events, rate=args.rate, limit=args.events, sleep=sleep):
                submit(event)
                sent += 1
                progress.advance(task)
            if scheduler is not None:
                progress.update(task, description=f"{scheduler.pending} delayed records to send")
                scheduler.drain()
            producer.flush()
    except InvalidEvent as error:
        return refuse("produce", f"event {sent + 1} of the source is not valid: {error}")
    # OSError, KeyError and ValueError: a source that cannot be read or lacks its label column.
    except (SettingsError, ProducerConfigError, DeliveryError, KafkaError) as error:
        return refuse("produce", error)
    except (OSError, KeyError, ValueError) as error:
        return refuse("produce", f"cannot read the source: {error!s}")
    summary = f"sent {sent} {args.kind} events for {args.model}"
    if scheduler is not None:
        counts = scheduler.counts
        summary += (
            f" and {counts.outcomes} outcomes ({counts.before} before their event, "
            f"{counts.missing} never sent)"
        )
    print(summary, file=sys.stderr)
    return 0


def _send_labeled(producer: Any, event: dict[str, Any]) -> None:
    producer.send(event)


def _send_unlabeled(producer: Any, event: dict[str, Any]) -> None:
    # The source's label, if it has one, is dropped: a scorer never sees it.
    producer.send_unlabeled({name: value for name, value in event.items() if name != "label"})


#: How ``produce`` sends each event, by the value of ``--labeled``/``--unlabeled``. With
#: ``--outcomes``, the unlabeled sender goes through an ``OutcomeScheduler``
#: (:mod:`streams.sdk.outcomes`), which sends each event's outcome later, first, or never.
_SENDERS: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "labeled": _send_labeled,
    "unlabeled": _send_unlabeled,
}


def _ping(args: argparse.Namespace) -> int:
    from streams.settings import Settings, SettingsError
    from streams.stack import broker, redis_server

    try:
        settings = Settings.from_env()
        kafka, url = settings.kafka, settings.redis_url
    except SettingsError as error:
        return refuse("ping", error)
    results = {
        "kafka": broker.broker_answers(kafka.pop("bootstrap_servers"), **kafka),
        "redis": redis_server.answers(url),
    }
    for name, answered in results.items():
        print(f"{name}: {'answers' if answered else 'DOES NOT ANSWER'}", file=sys.stderr)
    return 0 if all(results.values()) else 1


def _demo(args: argparse.Namespace) -> int:
    from streams.cli.demo import DemoError, DemoOptions, run
    from streams.settings import SettingsError
    from streams.stack import StackError

    default_rate = _DELAYED_DEMO_RATE if args.delayed_labels else _DEMO_RATE
    options = DemoOptions(
        events=args.events,
        drift_at=args.drift_at,
        rate=default_rate if args.rate is None else args.rate,
        seed=args.seed,
        config=args.config,
        stream=args.stream,
        report_dir=args.report_dir,
        keep_stack=args.keep_stack,
        delayed_labels=args.delayed_labels,
        outcome_delay=args.outcome_delay,
    )
    try:
        return run(options)
    except (SettingsError, DemoError, StackError) as error:
        return refuse("demo", error)


#: ``trainers.synthetic.KINDS``, spelt out: that module imports river, too slow for ``--help``.
SYNTHETIC_STREAMS = ("sea", "agrawal", "hyperplane", "friedman")

#: The demo's default pace; with --delayed-labels the scorer also joins every outcome, and the
#: stream must outlast the two trials, so it goes slower.
_DEMO_RATE = 2000.0
_DELAYED_DEMO_RATE = 1000.0


def _delay_range(text: str) -> tuple[float, float]:
    from streams.sdk.outcomes import OutcomeTimingError, parse_delay

    try:
        return parse_delay(text)
    except OutcomeTimingError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Event-driven retraining of ML models on Kafka. Every command reads "
        "KAFKA_BOOTSTRAP_SERVERS and REDIS_URL from the environment.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    stack = commands.add_parser("stack", help="run a local Kafka broker and Redis without Docker")
    stack.add_argument(
        "action",
        choices=["up", "down", "status", "node"],
        help="node: a fault drill on one Kafka node (node stop|kill|start ID)",
    )
    stack.add_argument(
        "drill",
        nargs="?",
        choices=["stop", "kill", "start"],
        help="with node: stop (SIGTERM), kill (SIGKILL) or start it again on its ports and data",
    )
    stack.add_argument("node_id", nargs="?", type=int, help="with node: the node's id (1 to 3)")
    stack.add_argument(
        "--brokers",
        type=int,
        choices=[1, 3],
        default=None,
        help="with up: 3 for a replicated three-node KRaft cluster (default: 1, or as many as "
        "the running stack has)",
    )
    stack.add_argument(
        "--leader-of",
        metavar="TOPIC:PARTITION",
        default=None,
        help="with node stop|kill: the node that leads this partition now",
    )
    stack.add_argument(
        "--controller",
        action="store_true",
        help="with node stop|kill: the active controller (the KRaft quorum leader) now",
    )
    stack.add_argument(
        "--state-dir", type=Path, default=None, help="where the stack keeps state, data and logs"
    )
    stack.add_argument("--kafka-port", type=int, default=None)
    stack.add_argument("--redis-port", type=int, default=None)
    stack.add_argument("--keep-data", action="store_true", help="with down: keep the data folders")
    stack.add_argument(
        "--with-prometheus",
        action="store_true",
        help="with up: also start Prometheus (Debian's package), scraping the workers that "
        "register in the stack's discovery folder, with deploy/prometheus/rules.yml",
    )
    stack.add_argument(
        "--secure",
        action="store_true",
        help="with up: Kafka with SASL_SSL (SCRAM), ACLs per role and Redis with TLS and ACL "
        "users; prints the operator's exports and writes one environment file per role",
    )
    stack.add_argument(
        "--timeout", type=float, default=20.0, help="with down: seconds before a process is killed"
    )
    stack.set_defaults(handler=_stack)

    ping = commands.add_parser(
        "ping", help="check that KAFKA_BOOTSTRAP_SERVERS and REDIS_URL answer (a health check)"
    )
    ping.set_defaults(handler=_ping)

    worker = commands.add_parser("worker", help="run a trainer worker (faust)")
    worker.add_argument("--config", type=Path, required=True, help="TOML or YAML configuration")
    worker.add_argument("--log-level", default="info")
    worker.add_argument(
        "--reset-candidate",
        action="append",
        default=[],
        metavar="MODEL/NAME",
        help="reset candidate NAME of MODEL: it starts learning afresh (repeatable)",
    )
    _add_metrics_options(worker)
    worker.set_defaults(handler=_worker)

    score = commands.add_parser(
        "score", help="run a scoring worker: unlabeled events in, predictions out (faust)"
    )
    score.add_argument("--config", type=Path, required=True, help="TOML or YAML configuration")
    score.add_argument(
        "--max-wait",
        type=float,
        default=30.0,
        help="seconds to wait for a model's first version before dead-lettering its events",
    )
    score.add_argument(
        "--group", default=None, help="consumer group (default: the [worker] group + '-scorer')"
    )
    score.add_argument("--log-level", default="info")
    _add_metrics_options(score)
    score.set_defaults(handler=_score)

    from streams.registry.cli import add_registry_parser

    add_registry_parser(commands, handler=_registry)

    produce = commands.add_parser(
        "produce", help="publish labeled events (to learn from) or unlabeled ones (to score)"
    )
    source = produce.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", type=Path, help="a CSV (with a header) or JSON-lines file")
    source.add_argument("--dataset", help="a dataset river ships, e.g. Phishing")
    source.add_argument(
        "--synthetic",
        choices=SYNTHETIC_STREAMS,
        help="a synthetic stream with a concept switch (friedman: regression)",
    )
    produce.add_argument("--model", default=None, help="model name (default: the source's)")
    produce.add_argument("--label", default="label", help="with --file: the label column")
    produce.add_argument("--events", type=int, default=None, help="how many (default: all)")
    produce.add_argument(
        "--drift-at",
        type=int,
        default=None,
        help="with --synthetic: index of the concept switch (default: half)",
    )
    produce.add_argument("--width", type=int, default=1, help="1: abrupt switch; more: gradual")
    produce.add_argument("--seed", type=int, default=42)
    produce.add_argument("--noise", type=float, default=0.0, help="label noise probability")
    produce.add_argument("--rate", type=float, default=None, help="events/s (default: max)")
    produce.add_argument("--quiet", action="store_true", help="no progress bar")
    kind = produce.add_mutually_exclusive_group()
    kind.add_argument(
        "--labeled",
        dest="kind",
        action="store_const",
        const="labeled",
        help="to the labeled topic, for the trainers (the default)",
    )
    kind.add_argument(
        "--unlabeled",
        dest="kind",
        action="store_const",
        const="unlabeled",
        help="without their labels, to the unlabeled topic, for the scoring workers",
    )
    outcomes = produce.add_argument_group(
        "delayed outcomes",
        "send each event unlabeled and its label later, to the outcomes topic, as production "
        "does (delays drawn with --seed)",
    )
    outcomes.add_argument(
        "--outcomes",
        action="store_true",
        help="send the outcome of each event (implies --unlabeled)",
    )
    outcomes.add_argument(
        "--outcome-delay",
        default=None,
        metavar="LOW-HIGH",
        help="seconds between an event and its outcome, drawn uniformly (default: 1-30; 5 for a "
        "fixed delay); the command ends once the last outcome is sent",
    )
    outcomes.add_argument(
        "--outcomes-before",
        type=float,
        default=None,
        metavar="SHARE",
        help="share of outcomes sent BEFORE their event, by the same delay (default: 0)",
    )
    outcomes.add_argument(
        "--outcomes-missing",
        type=float,
        default=None,
        metavar="SHARE",
        help="share of outcomes never sent (default: 0)",
    )
    produce.set_defaults(handler=_produce, kind=None)

    from streams.cli.tail import add_tail_parser

    add_tail_parser(commands, handler=_tail)

    demo = commands.add_parser(
        "demo",
        help="the whole pipeline on a drifting stream, watched live; writes a report",
        description="Start a trainer and a scoring worker (and the local stack when no "
        "Kafka/Redis answers), stream a drift dataset with a concept switch (SEA for a "
        "classification model, Friedman for a regression one), show metrics, registry records "
        "(promotions, drift, actions) and predictions live, then write summary.md and a plot "
        "of the model's metric (rolling_accuracy.png, rolling_mae.png, ...).",
    )
    demo.add_argument("--events", type=int, default=40_000, help="events to stream")
    demo.add_argument(
        "--drift-at", type=int, default=None, help="index of the concept switch (default: half)"
    )
    demo.add_argument(
        "--rate",
        type=float,
        default=None,
        help=f"events/s (0: max; default {_DEMO_RATE:,.0f}, {_DELAYED_DEMO_RATE:,.0f} with "
        "--delayed-labels)",
    )
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML or YAML, its first model shown (default: examples/sea.toml; others in "
        "examples/: drift_actions.toml, regression.toml)",
    )
    demo.add_argument(
        "--stream",
        choices=SYNTHETIC_STREAMS,
        default=None,
        help="the drift stream (default: sea for a classification model, friedman for a "
        "regression one)",
    )
    demo.add_argument("--report-dir", type=Path, default=Path("driftline-report"))
    demo.add_argument(
        "--keep-stack", action="store_true", help="leave a local stack it started running"
    )
    demo.add_argument(
        "--delayed-labels",
        action="store_true",
        help="labels only as outcomes (after their event, 10%% before, 1%% never), learned "
        "through the scorer's join after a labeled warm-up batch; a bad canary rolled back and "
        "a good one rolled out by the guardrail",
    )
    demo.add_argument(
        "--outcome-delay",
        type=_delay_range,
        default=(1.0, 30.0),
        metavar="LOW-HIGH",
        help="with --delayed-labels: seconds between an event and its outcome (default: 1-30)",
    )
    demo.set_defaults(handler=_demo)
    return parser


def _resolve_outcome_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check ``produce``'s outcome flags and turn them into ``args.outcome_timing``."""
    from streams.sdk.outcomes import OutcomeTiming, OutcomeTimingError, parse_delay

    tuning = {
        "--outcome-delay": args.outcome_delay,
        "--outcomes-before": args.outcomes_before,
        "--outcomes-missing": args.outcomes_missing,
    }
    if not args.outcomes:
        given = [flag for flag, value in tuning.items() if value is not None]
        if given:
            parser.error(f"{', '.join(given)} needs --outcomes")
        args.kind = args.kind or "labeled"
        return
    if args.kind == "labeled":
        parser.error(
            "--outcomes sends the events unlabeled (their labels as outcomes): drop --labeled"
        )
    args.kind = "unlabeled"
    try:
        args.outcome_timing = OutcomeTiming(
            delay=parse_delay(args.outcome_delay or "1-30"),
            before=args.outcomes_before or 0.0,
            missing=args.outcomes_missing or 0.0,
            seed=args.seed,
        )
    except OutcomeTimingError as error:
        parser.error(str(error))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "produce":
        if args.synthetic and args.events is None:
            parser.error("--synthetic needs --events")
        args.model = args.model or args.synthetic or args.dataset or (args.file and args.file.stem)
        if args.synthetic and args.drift_at is None:
            args.drift_at = args.events // 2
        _resolve_outcome_flags(parser, args)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
