"""Worker configuration: one TOML or YAML file, with overrides from the environment.

A file declares its models under ``models`` (each parsed by :class:`trainers.spec.ModelSpec`) and
the worker's own settings under ``worker``::

    [worker]
    group = "driftline-trainer"   # Kafka consumer group, also the checkpoint namespace
    partitions = 4                # partitions of the labeled-events topic when it is created
    checkpoint_interval = 2.0     # seconds between checkpoints
    checkpoint_every = 20000      # ... or this many events, whichever comes first
    metrics_every = 500           # publish each model's metrics to models.metrics this often
    session_timeout = 10.0        # seconds before the group gives a silent worker's partitions away
    max_unacked_events = 50000    # events held for a checkpoint (Redis away) before pausing

    [models.sea]
    task = "classification"
    ...

Any value can be overridden from the environment with ``DRIFTLINE__`` followed by its path,
``__``-separated: ``DRIFTLINE__worker__partitions=8``, ``DRIFTLINE__models__sea__window=500``.
Values are read as YAML scalars, so numbers and booleans keep their type.

Connection settings and secrets are not part of the file: they come only from the environment,
through :class:`streams.settings.Settings`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streams.settings import SettingsError
from streams.topics import Topics
from trainers.spec import ModelSpec

ENV_OVERRIDE_PREFIX = "DRIFTLINE__"


class ConfigFileError(SettingsError):
    """The configuration file, or an override of it, is missing something or holds a bad value."""


@dataclass(frozen=True)
class WorkerSettings:
    """How a trainer worker runs (not what it trains)."""

    group: str = "driftline-trainer"
    partitions: int = 4
    checkpoint_interval: float = 2.0
    checkpoint_every: int = 20_000
    max_event_bytes: int = 1_000_000
    metrics_every: int = 500
    session_timeout: float = 10.0
    max_unacked_events: int = 50_000


@dataclass(frozen=True)
class DriftlineConfig:
    """A parsed configuration file."""

    models: dict[str, ModelSpec]
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    topics: Topics = field(default_factory=Topics.from_env)


def _apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    for name, value in environ.items():
        if not name.startswith(ENV_OVERRIDE_PREFIX):
            continue
        *parents, leaf = name[len(ENV_OVERRIDE_PREFIX) :].split("__")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigFileError(f"{name}: {part!r} is not a table in the configuration")
        node[leaf] = yaml.safe_load(value)
    return raw


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> DriftlineConfig:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file and apply overrides."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigFileError(f"cannot read the configuration {path}: {error}") from error
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise ConfigFileError(f"{path} is not valid {path.suffix[1:].upper()}: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigFileError(f"{path} must hold a table with a 'models' section")
    raw = _apply_env_overrides(raw, os.environ if environ is None else environ)
    models = raw.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigFileError(f"{path} declares no models (a [models.NAME] section)")
    unknown = set(raw.get("worker", {})) - set(WorkerSettings.__dataclass_fields__)
    if unknown:
        raise ConfigFileError(f"{path}: unknown [worker] settings {sorted(unknown)}")
    return DriftlineConfig(
        models={name: ModelSpec.from_dict(name, spec) for name, spec in models.items()},
        worker=WorkerSettings(**raw.get("worker", {})),
        topics=Topics.from_env(environ),
    )
