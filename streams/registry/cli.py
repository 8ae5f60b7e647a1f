"""``driftline registry``: read the model registry and promote or roll back by hand.

::

    driftline registry ls                                  # every model, its stable version, trial
    driftline registry show MODEL [VERSION]                # a record as JSON (default: stable)
    driftline registry history MODEL                       # every record of a model, in order
    driftline registry diff MODEL V1 V2                    # the fields that differ between two
    driftline registry promote MODEL VERSION --reason TEXT
    driftline registry promote MODEL VERSION --canary 0.1 --reason TEXT   # or --shadow: a trial
    driftline registry rollout MODEL --reason TEXT         # the version on trial becomes stable
    driftline registry rollback MODEL [--to VERSION] --reason TEXT   # default: stop the trial,
                                                                     # else the previous version
    driftline registry verify MODEL VERSION [--config FILE]  # learn it again: same sha256?
    driftline registry dataset MODEL VERSION -o FILE         # its training events, JSON lines
    driftline registry prune-artifacts [MODEL] [--keep N] [--older-than 90d] [--dry-run]
    driftline registry restore-artifacts [MODEL]             # rebuild the artifacts Redis lost

A version is written as the tables print it, ``v2``, or as a bare ``2``.

``prune-artifacts`` removes from Redis the artifacts of each model's versions beyond ``--keep``
(the newest N stay) and ``--older-than`` (those issued more recently stay); given both, a version
goes only when neither keeps it. It never removes the artifact of a version that serves, is on
trial, is where a rollback goes, or that a manual record names (:mod:`streams.registry.retention`),
and prints each artifact it removes (or, with ``--dry-run``, would), then what it kept and why.
It needs a Redis user that may delete driftline's keys.

``verify`` replays the version's lineage through a fresh trainer (see
:mod:`streams.registry.verify`) and prints whether it reproduced the artifact's sha256, or the
first point where the replay diverged; it exits with status 1 on a mismatch. ``--config FILE``
replays under that file's configuration of the model instead of the recorded one (and takes the
file's ``[worker] max_event_bytes``). ``dataset`` writes the events the version learned, in
learning order, one event of the wire contract per line. ``restore-artifacts`` replays, as
``verify`` does, each version (of MODEL, or of every model) whose artifact Redis no longer holds,
and stores the rebuilt artifact again when it has the recorded sha256; one line per version
(``present``, ``restored``, ``diverged``: nothing stored, ``cannot``: why), exit status 1 when an
artifact is still missing.

``show MODEL`` follows the stable record with what serves beside it (the trial: version, arm,
fraction) and a live section: per (version, arm), the events served, the outcomes joined and the
live metric of the scoring workers' newest report (``"kind": "live"`` records of the metrics
topic), next to the evidence the version was promoted on. ``--json`` prints the record alone.

Promote, rollout and rollback publish a manual record (see :mod:`streams.registry.records`),
signed with the deployment's key and signed off with ``$DRIFTLINE_OPERATOR`` or the OS user. Every
action
reads the registry through :class:`~streams.registry.client.RegistryClient`, so it needs the
signing key, and shows only the records that key signed. Errors go to stderr, one line, with exit
status 2; an unreachable broker is one of them, noticed within a few seconds.
This module's imports stay light because ``driftline``'s parser is built on every command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.registry.client import LiveReport, RegistryClient
    from streams.registry.records import ModelVersion, ServingState

__all__ = [
    "act",
    "add_registry_parser",
    "live_rows",
    "parse_age",
    "parse_count",
    "parse_fraction",
    "parse_version",
    "previous_version",
    "record_differences",
    "run",
]

# Fields every record of a model has in common, or that always differ: not worth a diff row.
_NOT_DIFFED = frozenset({"model", "version", "created_at", "signature"})


def parse_version(text: str) -> int:
    """A version number as a user types it: ``v2``, ``V2`` or ``2``.

    >>> parse_version("v2"), parse_version("2")
    (2, 2)
    """
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit() or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version (write v2 or 2)")
    return int(digits)


def parse_fraction(text: str) -> float:
    """A canary's share of the traffic: a number in (0, 1].

    >>> parse_fraction("0.1")
    0.1
    """
    try:
        fraction = float(text)
    except ValueError:
        fraction = float("nan")
    if not 0 < fraction <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction in (0, 1], e.g. 0.1")
    return fraction


def parse_count(text: str) -> int:
    """A count of versions to keep: 0 or more.

    >>> parse_count("3")
    3
    """
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of versions (0, 1, 2, ...)")
    return int(text)


def parse_age(text: str) -> timedelta:
    """An age as durations are written in the configuration: ``90d``, ``12h``, ``30m``.

    >>> parse_age("90d").days
    90
    """
    from trainers.errors import ConfigError
    from trainers.spec import parse_duration

    try:
        return timedelta(seconds=parse_duration(text))
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_registry_parser(
    commands: argparse._SubParsersAction, *, handler: Callable[[argparse.Namespace], int]
) -> None:
    """Add ``registry`` and its actions to ``driftline``'s subcommands."""
    registry = commands.add_parser("registry", help="read the model registry, promote, roll back")
    actions = registry.add_subparsers(dest="action", required=True)
    actions.add_parser("ls", help="every model, its stable version and its trial")
    show = actions.add_parser(
        "show", help="a record as JSON (default: the stable one, with the trial and live metrics)"
    )
    show.add_argument("model")
    show.add_argument("version", type=parse_version, nargs="?", default=None)
    show.add_argument("--json", action="store_true", help="the record alone, as JSON")
    history = actions.add_parser("history", help="every record of a model, in log order")
    history.add_argument("model")
    diff = actions.add_parser("diff", help="the fields that differ between two versions")
    diff.add_argument("model")
    diff.add_argument("first", type=parse_version, metavar="V1")
    diff.add_argument("second", type=parse_version, metavar="V2")
    promote = actions.add_parser(
        "promote", help="make a version serve now, or put it on trial (--canary, --shadow)"
    )
    promote.add_argument("model")
    promote.add_argument("version", type=parse_version)
    trial = promote.add_mutually_exclusive_group()
    trial.add_argument(
        "--canary",
        type=parse_fraction,
        default=None,
        metavar="FRACTION",
        help="serve this fraction of the events (e.g. 0.1), the stable version the rest",
    )
    trial.add_argument(
        "--shadow",
        action="store_true",
        help="score every event beside the stable version, serving none",
    )
    promote.add_argument("--reason", required=True, help="why, for the audit log")
    rollout = actions.add_parser("rollout", help="make the version on trial the stable one")
    rollout.add_argument("model")
    rollout.add_argument("--reason", required=True, help="why, for the audit log")
    rollback = actions.add_parser(
        "rollback", help="stop the trial, or serve an earlier version again"
    )
    rollback.add_argument("model")
    rollback.add_argument(
        "--to",
        type=parse_version,
        default=None,
        dest="version",
        metavar="VERSION",
        help="the version to serve again (default: the stable one while a trial runs, which "
        "stops it; else the one served before the stable one)",
    )
    rollback.add_argument("--reason", required=True, help="why, for the audit log")
    verify = actions.add_parser(
        "verify", help="learn a version again from its lineage: does it give the same sha256?"
    )
    dataset = actions.add_parser(
        "dataset", help="write the events a version learned, in order, as JSON lines"
    )
    for parser in (verify, dataset):
        parser.add_argument("model")
        parser.add_argument("version", type=parse_version)
        parser.add_argument(
            "--config",
            default=None,
            help="replay under this configuration file's model instead of the recorded one",
        )
    dataset.add_argument("-o", "--output", required=True, help="the JSON lines file to write")
    prune = actions.add_parser(
        "prune-artifacts",
        help="remove old versions' artifacts from Redis (never one that serves, is on trial or "
        "can be rolled back to)",
    )
    prune.add_argument("model", nargs="?", default=None, help="one model (default: every model)")
    prune.add_argument(
        "--keep", type=parse_count, default=None, metavar="N", help="keep each model's N newest"
    )
    prune.add_argument(
        "--older-than",
        type=parse_age,
        default=None,
        metavar="AGE",
        help="keep the versions issued less than AGE ago (90d, 12h)",
    )
    prune.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    restore = actions.add_parser(
        "restore-artifacts",
        help="rebuild from their lineage the artifacts missing from Redis, and store them again",
    )
    restore.add_argument("model", nargs="?", default=None, help="default: every model")
    registry.set_defaults(handler=handler)


def run(args: argparse.Namespace) -> int:
    """Carry out ``driftline registry ACTION``; returns the exit status."""
    from kafka.errors import KafkaError
    from redis import RedisError

    from streams.cli.common import refuse, require_broker
    from streams.registry.client import RegistryClient, RegistryError
    from streams.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
        require_broker(settings.kafka)
        with RegistryClient(settings=settings) as client:
            return act(client, args)
    except (RegistryError, SettingsError, KafkaError, RedisError, ValueError) as error:
        return refuse(f"registry {args.action}", error)


def act(client: RegistryClient, args: argparse.Namespace) -> int:
    """Carry out ``args.action`` with ``client``; returns the exit status (1: a version that
    does not verify), the registry's errors propagate."""
    return _ACTIONS[args.action](client, args) or 0


def previous_version(history: list[ModelVersion]) -> int:
    """The version before the one serving now, from a model's ``history``: the newest version a
    trainer issued that is older than the serving one.

    After v1, v2, v3 it is v2; after a rollback to v2, it is v1 (a rollback only goes back).
    Raises ``ValueError`` when the serving version is the oldest.
    """
    from streams.registry.records import version_before

    serving = history[-1].version
    before = version_before(history, serving)
    if before is None:
        raise ValueError(
            f"{history[-1].model} v{serving} is its first version: nothing to roll back to"
        )
    return before


def record_differences(first: ModelVersion, second: ModelVersion) -> list[tuple[str, Any, Any]]:
    """``(field, first's value, second's value)`` for every field that differs.

    Nested fields are compared leaf by leaf under dotted names (``evidence.p_value``,
    ``candidate.params.params.LogisticRegression.optimizer.SGD``); a field one side lacks is
    None there.
    """
    left = dict(_leaves(_diffable(first)))
    right = dict(_leaves(_diffable(second)))
    return [
        (name, left.get(name), right.get(name))
        for name in sorted(left.keys() | right.keys())
        if left.get(name) != right.get(name)
    ]


def _diffable(record: ModelVersion) -> dict[str, Any]:
    return {name: value for name, value in asdict(record).items() if name not in _NOT_DIFFED}


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for name, inner in value.items():
            yield from _leaves(inner, f"{path}.{name}" if path else str(name))
    else:
        yield path, value


def _ls(client: RegistryClient, args: argparse.Namespace) -> None:
    states = client.states()
    if not states:
        print("the registry holds no models yet", file=sys.stderr)
        return
    table = _table("model", "stable", "kind", "candidate", "since", "by", "trial")
    for model in sorted(states):
        record = states[model].stable
        table.add_row(
            model,
            f"v{record.version}",
            record.kind,
            str(record.candidate.get("name", "")),
            record.created_at,
            record.operator or "trainer",
            _trial_cell(states[model]),
        )
    _print(table)


def _show(client: RegistryClient, args: argparse.Namespace) -> None:
    if args.version is not None:
        print(json.dumps(asdict(client.get(args.model, args.version)), indent=2, default=str))
        return
    from streams.registry.client import UnknownModelError
    from streams.registry.records import serving_state

    history = client.history(args.model)
    if not history:
        raise UnknownModelError(args.model)
    state = serving_state(history)[args.model]
    print(json.dumps(asdict(state.stable), indent=2, default=str))
    if args.json:
        return
    print(f"\ntrial: {_trial_cell(state)}")
    reports = client.live(args.model)
    if not reports:
        print("live: no report from a scoring worker yet")
        return
    # A version's first record is the one that issued its number, with its promotion's evidence.
    originals: dict[int, ModelVersion] = {}
    for record in history:
        originals.setdefault(record.version, record)
    table = _table(
        "version", "arm", "served", "joined", "live metric", "rolling", "cumulative", "at promotion"
    )
    for row in live_rows(state, reports, originals):
        table.add_row(*row)
    _print(table)


def live_rows(
    state: ServingState,
    reports: Mapping[tuple[int, str], LiveReport],
    originals: Mapping[int, ModelVersion],
) -> list[tuple[str, ...]]:
    """The rows of ``show``'s live section: per (version, arm), newest version first, what its
    report says next to the evidence of its promotion (``originals``: each version's trainer
    record). A version no longer serving is marked ``(retired)``."""
    serving = {state.stable.version} | ({state.trial.version} if state.trial else set())
    rows: list[tuple[str, ...]] = []
    for (version, arm), report in sorted(
        reports.items(), key=lambda item: (-item[0][0], item[0][1])
    ):
        evidence = originals[version].evidence if version in originals else {}
        metric: str | None = evidence.get("metric") or _first_metric(report)
        rows.append(
            (
                f"v{version}" + ("" if version in serving else " (retired)"),
                arm,
                f"{report.served:,}",
                f"{report.joined:,}",
                metric or "",
                _number(report.metric(metric, "rolling")) if metric else "",
                _number(report.metric(metric, "cumulative")) if metric else "",
                _promotion_evidence(evidence),
            )
        )
    return rows


def _first_metric(report: LiveReport) -> str | None:
    numbers = [
        name
        for name, value in (report.metrics.get("cumulative") or {}).items()
        if name != "n" and isinstance(value, float)
    ]
    return numbers[0] if numbers else None


def _promotion_evidence(evidence: Mapping[str, Any]) -> str:
    value = evidence.get("challenger_metric")
    if not isinstance(value, int | float):
        return "-"
    window = evidence.get("window") or []
    over = f" over events {window[0]}-{window[1]}" if len(window) == 2 else ""
    p_value = evidence.get("p_value")
    test = f", {evidence.get('test')} p={p_value:.3g}" if isinstance(p_value, float) else ""
    return f"{value:.4f}{over}{test}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _trial_cell(state: ServingState) -> str:
    trial = state.trial
    if trial is None:
        return "-"
    fraction = float((trial.rollout or {}).get("fraction", 0.0))
    share = "scores every event, serves none" if trial.kind == "shadow" else f"{fraction:.0%}"
    return f"v{trial.version} {trial.kind} ({share})"


def _history(client: RegistryClient, args: argparse.Namespace) -> None:
    from streams.registry.client import UnknownModelError

    records = client.history(args.model)
    if not records:
        raise UnknownModelError(args.model)
    table = _table("#", "version", "kind", "candidate", "previous", "reason", "by", "at")
    for index, record in enumerate(records, start=1):
        fraction = (record.rollout or {}).get("fraction")
        table.add_row(
            str(index),
            f"v{record.version}",
            record.kind + ("" if fraction is None else f" {float(fraction):.0%}"),
            str(record.candidate.get("name", "")),
            "" if record.previous_version is None else f"v{record.previous_version}",
            record.reason,
            record.operator or "trainer",
            record.created_at,
        )
    _print(table)


def _diff(client: RegistryClient, args: argparse.Namespace) -> None:
    first = client.get(args.model, args.first)
    second = client.get(args.model, args.second)
    differences = record_differences(first, second)
    if not differences:
        print(f"{args.model} v{args.first} and v{args.second} do not differ")
        return
    table = _table("field", f"v{args.first}", f"v{args.second}")
    for name, left, right in differences:
        table.add_row(name, _cell(left), _cell(right))
    _print(table)


def _promote(client: RegistryClient, args: argparse.Namespace) -> None:
    if args.canary is not None:
        record = client.canary(args.model, args.version, fraction=args.canary, reason=args.reason)
    elif args.shadow:
        record = client.shadow(args.model, args.version, reason=args.reason)
    else:
        record = client.promote(args.model, args.version, reason=args.reason)
    _report(record)


def _rollout(client: RegistryClient, args: argparse.Namespace) -> None:
    _report(client.rollout(args.model, reason=args.reason))


def _rollback(client: RegistryClient, args: argparse.Namespace) -> None:
    if args.version is None:
        if client.state(args.model).trial is not None:
            record = client.stop_trial(args.model, reason=args.reason)
            _report(
                record,
                f"the trial of v{record.previous_version} is stopped, v{record.version} serves "
                "alone",
            )
            return
        args.version = previous_version(client.history(args.model))
    _report(client.rollback(args.model, to=args.version, reason=args.reason))


def _report(record: ModelVersion, what: str | None = None) -> None:
    if what is None and record.kind in ("canary", "shadow"):
        fraction = float((record.rollout or {}).get("fraction", 0.0))
        role = (
            f"a canary serving {fraction:.0%} of the events"
            if record.kind == "canary"
            else "a shadow scoring every event"
        )
        what = f"v{record.version} is on trial as {role}, beside v{record.previous_version}"
    elif what is None:
        what = f"v{record.version} serves now (was v{record.previous_version})"
    print(f"{record.model}: {what}; {record.kind} record by {record.operator}")


def _table(*columns: str) -> Any:
    from rich.table import Table

    table = Table(*columns)
    return table


def _print(table: Any) -> None:
    from rich.console import Console

    # Wide enough for reasons and digests when stdout is a pipe (rich assumes 80 columns there).
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _replay_options(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration to replay with: the file's, if given, else the recorded one."""
    from streams.config import WorkerSettings, load_config

    if args.config is None:
        return {"max_event_bytes": WorkerSettings().max_event_bytes}
    config = load_config(args.config)
    if args.model not in config.models:
        raise ValueError(f"{args.config} configures no model {args.model!r}")
    return {"spec": config.models[args.model], "max_event_bytes": config.worker.max_event_bytes}


def _verify(client: RegistryClient, args: argparse.Namespace) -> int:
    result = client.replay(args.model, args.version, **_replay_options(args))
    versions = ", ".join(f"v{version}" for version in result.compared)
    if result.matches:
        print(
            f"{args.model} v{args.version}: match, sha256 {result.recorded_sha256} reproduced "
            f"from {result.events} events (versions compared: {versions})"
        )
        return 0
    print(f"{args.model} v{args.version}: MISMATCH, {result.divergence}")
    return 1


def _dataset(client: RegistryClient, args: argparse.Namespace) -> int:
    import orjson

    with open(args.output, "wb") as output:
        result = client.replay(
            args.model,
            args.version,
            on_learned=lambda event: output.write(orjson.dumps(event.to_json_object()) + b"\n"),
            **_replay_options(args),
        )
    if not result.matches:
        print(
            f"{args.model} v{args.version}: the replay does not match the record "
            f"({result.divergence}); {args.output} holds what it learned",
            file=sys.stderr,
        )
        return 1
    print(f"{args.output}: {result.events} events of {args.model} v{args.version}")
    return 0


def _prune_artifacts(client: RegistryClient, args: argparse.Namespace) -> None:
    from streams.registry.retention import Retention

    retention = Retention(keep=args.keep, older_than=args.older_than)
    pruning = client.prune_artifacts(retention, model=args.model, dry_run=args.dry_run)
    for removal in pruning.removed:
        verdict = removal.verdict
        done = ("would remove" if args.dry_run else "removed") if removal.present else "absent"
        print(
            f"{verdict.model} v{verdict.version}: {done} {verdict.artifact.key} "
            f"({verdict.artifact.size:,} bytes, issued {verdict.created_at})"
        )
    kept: dict[str, list[str]] = {}
    for verdict in pruning.kept:
        kept.setdefault(verdict.model, []).append(f"v{verdict.version} ({verdict.kept})")
    for model, versions in kept.items():
        print(f"{model}: kept {', '.join(versions)}")
    gone = sum(removal.present for removal in pruning.removed)
    print(
        f"{gone} artifact(s) {'to remove' if args.dry_run else 'removed'}, {retention.describe()}",
        file=sys.stderr,
    )


def _restore_artifacts(client: RegistryClient, args: argparse.Namespace) -> int:
    from streams.config import WorkerSettings

    missing = 0
    # One line per version as soon as it is known: a replay can take a while.
    for restoration in client.restore_artifacts(
        args.model, max_event_bytes=WorkerSettings().max_event_bytes
    ):
        print(restoration, flush=True)
        missing += not restoration.stored
    return 1 if missing else 0


_ACTIONS: dict[str, Callable[[RegistryClient, argparse.Namespace], int | None]] = {
    "ls": _ls,
    "show": _show,
    "history": _history,
    "diff": _diff,
    "promote": _promote,
    "rollout": _rollout,
    "rollback": _rollback,
    "verify": _verify,
    "dataset": _dataset,
    "prune-artifacts": _prune_artifacts,
    "restore-artifacts": _restore_artifacts,
}
