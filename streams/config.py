"""Worker configuration: one TOML or YAML file, with overrides from the environment.

A file declares its models under ``models`` (each parsed by :class:`trainers.spec.ModelSpec`),
the worker's own settings under ``worker`` and, optionally, how driftline's topics are created
under ``topics``::

    [worker]
    group = "driftline-trainer"   # Kafka consumer group, also the checkpoint namespace
    partitions = 4                # partitions of the labeled-events topic when it is created
    checkpoint_interval = 2.0     # seconds between checkpoints
    checkpoint_every = 20000      # ... or this many events, whichever comes first
    metrics_every = 500           # publish each model's metrics to models.metrics this often
    session_timeout = 10.0        # seconds before the group gives a silent worker's partitions away
    instance_id = ""              # per process (set it from the environment): static membership
    max_unacked_events = 50000    # events held for a checkpoint (Redis away) before pausing
    progress_interval = 30.0      # seconds between two progress lines in the log
    metrics_interval = 5.0        # seconds between two live-metrics reports of a scorer
    event_retention = "forever"   # retention of the labeled and outcomes topics it creates

    [topics.registry]             # a table per group: events, outcomes, predictions, registry,
    replication_factor = 3        # dead_letters, metrics, internal (faust's); min(3, brokers)
    min_insync_replicas = 2       # unless set: min(2, replication_factor)

    [topics.events]               # the labeled and unlabeled events
    partitions = 4                # events, outcomes (as many), predictions; [worker] partitions

    [redis]
    durability = "none"           # or "replica", "aof": what a checkpoint or an artifact must
                                  # reach before it counts as saved (streams.durability)

    [models.sea]
    task = "classification"
    ...

Any value can be overridden from the environment with ``DRIFTLINE__`` followed by its path,
``__``-separated: ``DRIFTLINE__worker__partitions=8``, ``DRIFTLINE__models__sea__window=500``,
``DRIFTLINE__topics__registry__replication_factor=3``, ``DRIFTLINE__redis__durability=aof``.
Values are read as YAML scalars, so numbers and booleans keep their type. An override can change
a model the file declares, not add one: a misspelt model name would otherwise become a model of
its own and fail for a reason that hides the typo.

The ``topics`` tables are :class:`streams.admin.TopicSettings`: what they leave out is resolved
against the cluster when a worker starts (:func:`streams.admin.ensure_topics`, which also checks
the existing topics). A ``partitions`` setting is refused for the single-partition topics
(registry, dead letters, metrics: their readers need their order) and faust's own.

Every mistake is a :class:`ConfigFileError` (or, for a model's table, a
:class:`trainers.errors.ConfigError`) whose message is one line: it names the file or the
environment variable that caused it, and suggests the closest known name for a misspelt one.

Connection settings and secrets are not part of the file: they come only from the environment,
through :class:`streams.settings.Settings`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streams.admin import (
    DEFAULT_PARTITIONS,
    FIXED_PARTITIONS,
    FOREVER,
    REFUSED_SETTINGS,
    TOPIC_GROUPS,
    TopicGroup,
    TopicSettings,
)
from streams.durability import DURABILITY_LEVELS, Durability, DurabilityLevel
from streams.settings import SettingsError
from streams.topics import Topics
from trainers.errors import ConfigError
from trainers.spec import ModelSpec, parse_duration

__all__ = [
    "ENV_OVERRIDE_PREFIX",
    "SECTIONS",
    "ConfigFileError",
    "DriftlineConfig",
    "RedisSettings",
    "WorkerSettings",
    "did_you_mean",
    "load_config",
]

ENV_OVERRIDE_PREFIX = "DRIFTLINE__"
#: The top-level tables a configuration file may hold.
SECTIONS = ("models", "redis", "topics", "worker")
#: The settings of a ``[topics.<group>]`` table, all positive integers.
_TOPIC_SETTING_KINDS = dict.fromkeys(
    (setting.name for setting in dataclasses.fields(TopicGroup)), "int"
)


class ConfigFileError(SettingsError):
    """The configuration file, or an override of it, is missing something or holds a bad value."""


@dataclass(frozen=True)
class WorkerSettings:
    """How a trainer worker runs (not what it trains).

    Every number must be positive: :func:`load_config` refuses others before anything touches
    Kafka (a zero partition count would otherwise fail halfway through creating the topics).
    """

    group: str = "driftline-trainer"
    partitions: int = DEFAULT_PARTITIONS
    checkpoint_interval: float = 2.0
    checkpoint_every: int = 20_000
    max_event_bytes: int = 1_000_000
    metrics_every: int = 500
    session_timeout: float = 10.0
    max_unacked_events: int = 50_000
    progress_interval: float = 30.0
    metrics_interval: float = 5.0
    event_retention: str = "forever"
    instance_id: str = ""
    """The worker's static membership in its consumer group (Kafka's ``group.instance.id``,
    KIP-345), unique per process and stable across its restarts (a StatefulSet pod's name, a
    systemd instance): a worker restarted under the same id gets its partitions back at once,
    without waiting ``session_timeout`` for the group to drop its killed predecessor. A static
    member does not leave the group when stopped, so its partitions wait for it (or for
    ``session_timeout``) during a restart. Empty: dynamic membership."""

    def __post_init__(self) -> None:
        self.event_retention_ms  # noqa: B018 - refuses a bad duration when the file is read

    @property
    def event_retention_ms(self) -> int:
        """``event_retention`` in milliseconds: -1 for ``"forever"``, else a duration (``"90d"``)
        after which the labeled events and outcomes of topics created from now on expire."""
        if self.event_retention == "forever":
            return FOREVER
        try:
            return int(parse_duration(self.event_retention) * 1000)
        except ConfigError as error:
            raise ConfigFileError(f"[worker] event_retention: 'forever', or {error}") from None


@dataclass(frozen=True)
class RedisSettings:
    """How workers use Redis (where it is comes from ``REDIS_URL``, not the file)."""

    durability: DurabilityLevel = "none"
    """What a checkpoint or an artifact must reach before it counts as saved: ``"none"`` (the
    primary's memory), ``"replica"`` (a replica too) or ``"aof"`` (the primary's fsynced
    append-only file); see :mod:`streams.durability`."""

    @property
    def wait(self) -> Durability:
        """The :class:`~streams.durability.Durability` workers write with."""
        return Durability(self.durability)


@dataclass(frozen=True)
class DriftlineConfig:
    """A parsed configuration file."""

    models: dict[str, ModelSpec]
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    topics: Topics = field(default_factory=Topics.from_env)
    topic_settings: TopicSettings = field(default_factory=TopicSettings)
    """The ``[topics]`` tables; :func:`streams.admin.ensure_topics` resolves what they leave to
    the cluster, and a worker runs with the settings it resolved."""
    redis: RedisSettings = field(default_factory=RedisSettings)


def did_you_mean(name: str, known: Collection[str]) -> str:
    """``" (did you mean 'X'?)"`` for the known name closest to ``name``, or ``""``.

    >>> did_you_mean("partitons", ["group", "partitions"])
    " (did you mean 'partitions'?)"
    >>> did_you_mean("zzz", ["group", "partitions"])
    ''
    """
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class _Source:
    """Where each value came from: the file, or the environment variable that overrode it."""

    path: Path
    overrides: dict[tuple[str, ...], str]

    def cause(self, *prefix: str, message: str | None = None) -> str:
        """`` (from the environment: NAME=VALUE)`` for the overrides at or under ``prefix``.

        With ``message``, only the overrides whose setting it names: an error in a model's table
        is not blamed on an unrelated override of the same model.
        """
        return self.causes(prefix, message=message)

    def causes(self, *prefixes: tuple[str, ...], message: str | None = None) -> str:
        """:meth:`cause` of the overrides under any of ``prefixes``, in one parenthesis."""
        names = [
            setting
            for where, setting in self.overrides.items()
            if any(where[: len(prefix)] == prefix for prefix in prefixes)
            and (message is None or where[-1] in message)
        ]
        return f" (from the environment: {', '.join(names)})" if names else ""


def _apply_env_overrides(
    raw: dict[str, Any], environ: Mapping[str, str]
) -> dict[tuple[str, ...], str]:
    """Apply the ``DRIFTLINE__`` overrides to ``raw``; returns each one's path and setting."""
    applied: dict[tuple[str, ...], str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_OVERRIDE_PREFIX):
            continue
        where = tuple(name[len(ENV_OVERRIDE_PREFIX) :].split("__"))
        *parents, leaf = where
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigFileError(f"{name}: {part!r} is not a table in the configuration")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError:
            node[leaf] = value  # not a YAML scalar: the text itself, refused later if it must be
        applied[where] = f"{name}={value}"
    return applied


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> DriftlineConfig:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file and apply overrides.

    Raises :class:`ConfigFileError` for a file that cannot be read or parsed, an unknown
    section, ``[worker]`` or ``[topics]`` setting, a bad value of one, or an override of a model
    the file does not declare; :class:`trainers.errors.ConfigError` for a bad model.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigFileError(
            f"cannot read the configuration {path}: {error.strerror or error}"
        ) from error
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        # YAML's messages span several lines (with a caret under the fault): keep them on one.
        detail = " ".join(str(error).split())
        raise ConfigFileError(f"{path} is not valid {path.suffix[1:].upper()}: {detail}") from error
    if not isinstance(raw, dict):
        raise ConfigFileError(f"{path} must hold a table with a 'models' section")
    declared = raw.get("models")
    declared_models = set(declared) if isinstance(declared, dict) else set()
    source = _Source(path, _apply_env_overrides(raw, os.environ if environ is None else environ))
    for section in raw:
        if section not in SECTIONS:
            raise ConfigFileError(
                f"{path}: unknown section {section!r}{did_you_mean(section, SECTIONS)}; "
                f"sections: {list(SECTIONS)}{source.cause(section)}"
            )
    models = raw.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigFileError(f"{path} declares no models (a [models.NAME] section)")
    added = sorted(models.keys() - declared_models)
    if added:
        raise ConfigFileError(
            f"{path} declares no model {added[0]!r}{did_you_mean(added[0], declared_models)}; "
            f"an override cannot add one{source.cause('models', added[0])}"
        )
    # Cheap checks first: models build estimators.
    worker_table = raw.get("worker", {})
    worker = _worker(worker_table, source)
    topic_settings = _topics(raw.get("topics", {}), source, worker, worker_table)
    redis_settings = _redis(raw.get("redis", {}), source)
    return DriftlineConfig(
        models={name: _model(name, spec, source) for name, spec in models.items()},
        # One partition count of the events, whichever table gave it.
        worker=dataclasses.replace(worker, partitions=topic_settings.partitions),
        topics=Topics.from_env(environ),
        topic_settings=topic_settings,
        redis=redis_settings,
    )


def _model(name: str, table: Any, source: _Source) -> ModelSpec:
    try:
        return ModelSpec.from_dict(name, table)
    except ConfigError as error:
        message = str(error)
        # A dict, not a set: one hint per misspelt name, in the order the candidates give them.
        hints = {
            unknown: did_you_mean(unknown, known)
            for unknown, known in _misspelt_estimators(table)
            if repr(unknown) in message
        }
        hint = "".join(hints.values())
        cause = source.cause("models", name, message=message)
        raise ConfigError(f"{message}{hint}{cause}") from None


def _misspelt_estimators(table: Any) -> Iterator[tuple[str, Collection[str]]]:
    """``(name, known names)`` for each estimator a model's candidates name that does not exist."""
    from trainers.candidates import SKLEARN_ESTIMATORS

    candidates = table.get("candidates") if isinstance(table, Mapping) else None
    for candidate in candidates if isinstance(candidates, list) else []:
        if not isinstance(candidate, Mapping):
            continue
        sklearn, river = candidate.get("sklearn"), candidate.get("river")
        if isinstance(sklearn, str) and sklearn not in SKLEARN_ESTIMATORS:
            yield sklearn, SKLEARN_ESTIMATORS.keys()
        if isinstance(river, str):
            known = _river_estimators()
            for step in river.split("|"):
                class_name = step.strip().rpartition(".")[2]
                if class_name not in known:
                    yield class_name, known


def _river_estimators() -> frozenset[str]:
    """The class names of every estimator in the river modules a candidate may name."""
    import importlib

    from river.base import Estimator

    from trainers.candidates import RIVER_MODULES

    return frozenset(
        name
        for module in RIVER_MODULES
        for name, value in vars(importlib.import_module(f"river.{module}")).items()
        if isinstance(value, type) and issubclass(value, Estimator)
    )


def _worker(table: Any, source: _Source) -> WorkerSettings:
    # The annotations are strings (postponed evaluation): "str", "int" or "float".
    kinds = {setting.name: str(setting.type) for setting in dataclasses.fields(WorkerSettings)}
    return WorkerSettings(**_settings(table, kinds, ("worker",), source))


def _redis(table: Any, source: _Source) -> RedisSettings:
    settings = RedisSettings(**_settings(table, {"durability": "str"}, ("redis",), source))
    if settings.durability not in DURABILITY_LEVELS:
        raise ConfigFileError(
            f"{source.path}: [redis] durability must be one of {list(DURABILITY_LEVELS)}, got "
            f"{settings.durability!r}{did_you_mean(settings.durability, DURABILITY_LEVELS)}"
            f"{source.cause('redis', 'durability')}"
        )
    return settings


def _settings(
    table: Any, kinds: Mapping[str, str], where: tuple[str, ...], source: _Source
) -> dict[str, Any]:
    """The settings of the table at ``where`` (``("worker",)``, ``("topics", "registry")``),
    each checked against its kind in ``kinds`` ("str", "int" or "float")."""
    label = f"[{'.'.join(where)}]"
    if not isinstance(table, dict):
        raise ConfigFileError(f"{source.path}: {label} must be a table{source.cause(*where)}")
    values: dict[str, Any] = {}
    for name, value in table.items():
        if name not in kinds:
            raise ConfigFileError(
                f"{source.path}: unknown {label} setting {name!r}{did_you_mean(name, kinds)}; "
                f"settings: {sorted(kinds)}{source.cause(*where, name)}"
            )
        checked = _checked(value, kinds[name])
        if checked is None:
            wanted = {"str": "a non-empty string", "int": "a positive integer"}.get(
                kinds[name], "a positive number"
            )
            raise ConfigFileError(
                f"{source.path}: {label} {name} must be {wanted}, got {value!r}"
                f"{source.cause(*where, name)}"
            )
        values[name] = checked
    return values


def _topics(
    table: Any, source: _Source, worker: WorkerSettings, worker_given: Collection[str]
) -> TopicSettings:
    """The ``[topics.<group>]`` tables, with the events' partition count (``[topics.events]
    partitions``, or ``[worker] partitions``: ``worker_given`` names the settings the
    ``[worker]`` table gives) and retention (``[worker] event_retention``)."""
    if not isinstance(table, dict):
        raise ConfigFileError(
            f"{source.path}: [topics] must hold tables ([topics.registry], ...)"
            f"{source.cause('topics')}"
        )
    groups: dict[str, TopicGroup] = {}
    for group, settings in table.items():
        if group not in TOPIC_GROUPS:
            raise ConfigFileError(
                f"{source.path}: unknown topic group [topics.{group}]"
                f"{did_you_mean(group, TOPIC_GROUPS)}; groups: {list(TOPIC_GROUPS)}"
                f"{source.cause('topics', group)}"
            )
        values = _settings(settings, _TOPIC_SETTING_KINDS, ("topics", group), source)
        for name in values:
            reason = (
                FIXED_PARTITIONS.get(group)
                if name == "partitions"
                else REFUSED_SETTINGS.get((group, name))
            )
            if reason:
                raise ConfigFileError(
                    f"{source.path}: [topics.{group}] {name} cannot be set: {reason}"
                    f"{source.cause('topics', group, name)}"
                )
        given = groups[group] = TopicGroup(**values)
        if (given.min_insync_replicas or 0) > (given.replication_factor or math.inf):
            raise ConfigFileError(
                f"{source.path}: [topics.{group}] min_insync_replicas = "
                f"{given.min_insync_replicas} is above its replication_factor = "
                f"{given.replication_factor}: no write would ever be acknowledged"
                f"{source.cause('topics', group)}"
            )
    partitions = groups.get("events", TopicGroup()).partitions or worker.partitions
    if partitions != worker.partitions and "partitions" in worker_given:
        raise ConfigFileError(
            f"{source.path}: [topics.events] partitions = {partitions} and [worker] partitions "
            f"= {worker.partitions} disagree: set only one (the [worker] one is its older name)"
            f"{source.causes(('topics', 'events', 'partitions'), ('worker', 'partitions'))}"
        )
    outcomes = groups.get("outcomes", TopicGroup()).partitions or partitions
    if outcomes != partitions:
        raise ConfigFileError(
            f"{source.path}: [topics.outcomes] partitions = {outcomes} differs from the events' "
            f"{partitions}: the scorer joins a model's events and outcomes in the partition its "
            "key maps to, which needs as many on both topics"
            f"{source.cause('topics', 'outcomes', 'partitions')}"
        )
    return TopicSettings(
        partitions=partitions, event_retention_ms=worker.event_retention_ms, groups=groups
    )


def _checked(value: Any, kind: str) -> str | int | float | None:
    """``value`` as a ``kind`` worker setting, or None when it is not one."""
    if kind == "str":
        return value if isinstance(value, str) and value.strip() else None
    # bool is an int to Python, never a count or a duration to a user.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind == "int":
        return value if isinstance(value, int) and value >= 1 else None
    return float(value) if math.isfinite(value) and value > 0 else None
