"""``driftline registry``: read the model registry and promote or roll back by hand.

::

    driftline registry ls                                  # every model and the version serving it
    driftline registry show MODEL [VERSION]                # a record as JSON (default: serving)
    driftline registry history MODEL                       # every record of a model, in order
    driftline registry diff MODEL V1 V2                    # the fields that differ between two
    driftline registry promote MODEL VERSION --reason TEXT
    driftline registry rollback MODEL [--to VERSION] --reason TEXT   # default: the previous one

A version is written as the tables print it, ``v2``, or as a bare ``2``.

Promote and rollback publish a manual record (see :mod:`streams.registry.records`), signed with
the deployment's key and signed off with ``$DRIFTLINE_OPERATOR`` or the OS user. Every action
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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.registry.client import RegistryClient
    from streams.registry.records import ModelVersion

__all__ = ["add_registry_parser", "parse_version", "previous_version", "record_differences", "run"]

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


def add_registry_parser(
    commands: argparse._SubParsersAction, *, handler: Callable[[argparse.Namespace], int]
) -> None:
    """Add ``registry`` and its actions to ``driftline``'s subcommands."""
    registry = commands.add_parser("registry", help="read the model registry, promote, roll back")
    actions = registry.add_subparsers(dest="action", required=True)
    actions.add_parser("ls", help="every model and the version serving it")
    show = actions.add_parser("show", help="a record as JSON (default: the serving one)")
    show.add_argument("model")
    show.add_argument("version", type=parse_version, nargs="?", default=None)
    history = actions.add_parser("history", help="every record of a model, in log order")
    history.add_argument("model")
    diff = actions.add_parser("diff", help="the fields that differ between two versions")
    diff.add_argument("model")
    diff.add_argument("first", type=parse_version, metavar="V1")
    diff.add_argument("second", type=parse_version, metavar="V2")
    promote = actions.add_parser("promote", help="make a version serve now (a manual record)")
    promote.add_argument("model")
    promote.add_argument("version", type=parse_version)
    promote.add_argument("--reason", required=True, help="why, for the audit log")
    rollback = actions.add_parser("rollback", help="serve an earlier version again")
    rollback.add_argument("model")
    rollback.add_argument(
        "--to",
        type=parse_version,
        default=None,
        dest="version",
        metavar="VERSION",
        help="the version to serve again (default: the one served before the current one)",
    )
    rollback.add_argument("--reason", required=True, help="why, for the audit log")
    registry.set_defaults(handler=handler)


def run(args: argparse.Namespace) -> int:
    """Carry out ``driftline registry ACTION``; returns the exit status."""
    from kafka.errors import KafkaError

    from streams.cli.common import refuse, require_broker
    from streams.registry.client import RegistryClient, RegistryError
    from streams.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
        require_broker(settings.kafka)
        with RegistryClient(settings=settings) as client:
            _ACTIONS[args.action](client, args)
    except (RegistryError, SettingsError, KafkaError, ValueError) as error:
        return refuse(f"registry {args.action}", error)
    return 0


def previous_version(history: list[ModelVersion]) -> int:
    """The version before the one serving now, from a model's ``history``: the newest version a
    trainer issued that is older than the serving one.

    After v1, v2, v3 it is v2; after a rollback to v2, it is v1 (a rollback only goes back).
    Raises ``ValueError`` when the serving version is the oldest.
    """
    serving = history[-1].version
    older = [r.version for r in history if not r.is_manual and r.version < serving]
    if not older:
        raise ValueError(
            f"{history[-1].model} v{serving} is its first version: nothing to roll back to"
        )
    return max(older)


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
    serving = client.serving()
    if not serving:
        print("the registry holds no models yet", file=sys.stderr)
        return
    table = _table("model", "serving", "kind", "candidate", "since", "by")
    for model in sorted(serving):
        record = serving[model]
        table.add_row(
            model,
            f"v{record.version}",
            record.kind,
            str(record.candidate.get("name", "")),
            record.created_at,
            record.operator or "trainer",
        )
    _print(table)


def _show(client: RegistryClient, args: argparse.Namespace) -> None:
    from streams.registry.client import UnknownModelError

    if args.version is None:
        record = client.latest(args.model)
        if record is None:
            raise UnknownModelError(args.model)
    else:
        record = client.get(args.model, args.version)
    print(json.dumps(asdict(record), indent=2, default=str))


def _history(client: RegistryClient, args: argparse.Namespace) -> None:
    from streams.registry.client import UnknownModelError

    records = client.history(args.model)
    if not records:
        raise UnknownModelError(args.model)
    table = _table("#", "version", "kind", "candidate", "previous", "reason", "by", "at")
    for index, record in enumerate(records, start=1):
        table.add_row(
            str(index),
            f"v{record.version}",
            record.kind,
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
    _report(client.promote(args.model, args.version, reason=args.reason))


def _rollback(client: RegistryClient, args: argparse.Namespace) -> None:
    from streams.registry.client import UnknownModelError

    version = args.version
    if version is None:
        history = client.history(args.model)
        if not history:
            raise UnknownModelError(args.model)
        version = previous_version(history)
    _report(client.rollback(args.model, to=version, reason=args.reason))


def _report(record: ModelVersion) -> None:
    print(
        f"{record.model}: v{record.version} serves now (was v{record.previous_version}); "
        f"{record.kind} record by {record.operator}"
    )


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


_ACTIONS: dict[str, Callable[[RegistryClient, argparse.Namespace], None]] = {
    "ls": _ls,
    "show": _show,
    "history": _history,
    "diff": _diff,
    "promote": _promote,
    "rollback": _rollback,
}
