"""Worker configuration: one TOML or YAML file, environment overrides, and connection settings.

A file declares its models under ``models`` (each parsed by :class:`trainers.spec.ModelSpec`) and
the worker's own settings under ``worker``::

    [worker]
    group = "driftline-trainer"   # Kafka consumer group, also the checkpoint namespace
    partitions = 4                # partitions of the labeled-events topic when it is created
    checkpoint_interval = 2.0     # seconds between checkpoints
    checkpoint_every = 20000      # ... or this many events, whichever comes first
    metrics_every = 500           # publish each model's metrics to models.metrics this often
    session_timeout = 10.0        # seconds before the group gives a silent worker's partitions away

    [models.sea]
    task = "classification"
    ...

Any value can be overridden from the environment with ``DRIFTLINE__`` followed by its path,
``__``-separated: ``DRIFTLINE__worker__partitions=8``, ``DRIFTLINE__models__sea__window=500``.
Values are read as YAML scalars, so numbers and booleans keep their type.

Connection settings and secrets come only from the environment (or a file it names): the broker
(``KAFKA_BOOTSTRAP_SERVERS``, plus ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*``, ``KAFKA_SSL_*``),
Redis (``REDIS_URL``, ``rediss://`` for TLS) and the artifact signing key
(``DRIFTLINE_SIGNING_KEY`` or ``DRIFTLINE_SIGNING_KEY_FILE``).
"""

from __future__ import annotations

import os
import ssl
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streams.topics import Topics
from trainers.spec import ModelSpec

ENV_OVERRIDE_PREFIX = "DRIFTLINE__"


class ConfigFileError(ValueError):
    """The configuration file or the environment is missing something or holds a bad value."""


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


# kafka-python settings that are booleans: the environment only holds strings, and the string
# "false" is truthy.
_BOOLEAN_KAFKA_SETTINGS = frozenset({"ssl_check_hostname"})
_TRUE_WORDS, _FALSE_WORDS = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")
"""The SASL mechanisms both kafka-python and faust (aiokafka) can take from the environment."""


def kafka_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Bootstrap servers and the security settings that pass through to every Kafka client.

    ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_PLAIN_USERNAME``,
    ``KAFKA_SASL_PLAIN_PASSWORD``, ``KAFKA_SSL_CAFILE``, ... become the kafka-python keyword
    arguments ``security_protocol``, ``sasl_mechanism``, ... (lower case, prefix removed).
    ``KAFKA_SSL_CHECK_HOSTNAME`` is read as a boolean (``true``/``false``). The faust workers
    take the same settings through :func:`faust_broker_options`.
    """
    env = os.environ if environ is None else environ
    bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        raise ConfigFileError(
            "KAFKA_BOOTSTRAP_SERVERS is not set; start a local stack with "
            "'eval \"$(driftline stack up)\"' or point it at your cluster"
        )
    settings: dict[str, Any] = {"bootstrap_servers": bootstrap}
    for name, value in env.items():
        if name.startswith(("KAFKA_SECURITY_", "KAFKA_SASL_", "KAFKA_SSL_")):
            setting = name[len("KAFKA_") :].lower()
            settings[setting] = (
                _boolean(name, value) if setting in _BOOLEAN_KAFKA_SETTINGS else value
            )
    return settings


def _boolean(name: str, value: str) -> bool:
    if value.strip().lower() in _TRUE_WORDS:
        return True
    if value.strip().lower() in _FALSE_WORDS:
        return False
    raise ConfigFileError(f"{name} must be true or false, not {value!r}")


def faust_broker_options(kafka: Mapping[str, Any]) -> dict[str, Any]:
    """The ``faust.App`` keyword arguments that reach the cluster ``kafka`` describes.

    ``kafka`` holds kafka-python settings (:func:`kafka_settings`): ``broker`` lists its bootstrap
    servers as ``kafka://`` URLs and, unless ``security_protocol`` is ``PLAINTEXT`` (the
    default), ``broker_credentials`` carries the same security: a ``faust.SSLCredentials`` for
    ``SSL``, a ``faust.SASLCredentials`` (or ``GSSAPICredentials``) for ``SASL_PLAINTEXT`` and
    ``SASL_SSL``. The TLS context is built as kafka-python builds its own, from ``ssl_cafile``,
    ``ssl_certfile``, ``ssl_keyfile``, ``ssl_password``, ``ssl_crlfile`` and
    ``ssl_check_hostname`` (or taken as is from ``ssl_context``).
    """
    import faust  # here, not at the top: the CLI's light commands import this module too

    servers = kafka["bootstrap_servers"]
    if isinstance(servers, str):
        servers = servers.split(",")
    options: dict[str, Any] = {
        "broker": [f"kafka://{server.strip()}" for server in servers if server.strip()]
    }
    protocol = str(kafka.get("security_protocol") or "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return options
    if protocol == "SSL":
        options["broker_credentials"] = faust.SSLCredentials(kafka_ssl_context(kafka))
        return options
    if protocol not in ("SASL_PLAINTEXT", "SASL_SSL"):
        raise ConfigFileError(
            f"KAFKA_SECURITY_PROTOCOL {protocol!r} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT "
            "or SASL_SSL"
        )
    ssl_context = kafka_ssl_context(kafka) if protocol == "SASL_SSL" else None
    mechanism = str(kafka.get("sasl_mechanism") or "").upper()
    if mechanism not in SASL_MECHANISMS:
        raise ConfigFileError(
            f"KAFKA_SECURITY_PROTOCOL {protocol} needs KAFKA_SASL_MECHANISM, one of "
            f"{', '.join(SASL_MECHANISMS)} (not {mechanism or 'unset'})"
        )
    if mechanism == "GSSAPI":
        options["broker_credentials"] = faust.GSSAPICredentials(
            kerberos_service_name=kafka.get("sasl_kerberos_service_name") or "kafka",
            kerberos_domain_name=kafka.get("sasl_kerberos_domain_name"),
            ssl_context=ssl_context,
        )
    else:
        options["broker_credentials"] = faust.SASLCredentials(
            username=kafka.get("sasl_plain_username"),
            password=kafka.get("sasl_plain_password"),
            mechanism=mechanism,
            ssl_context=ssl_context,
        )
    return options


def kafka_ssl_context(kafka: Mapping[str, Any]) -> ssl.SSLContext:
    """The TLS context kafka-python would build from the ``ssl_*`` settings in ``kafka``."""
    if kafka.get("ssl_context") is not None:
        return kafka["ssl_context"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = bool(kafka.get("ssl_check_hostname", True))
    try:
        if kafka.get("ssl_cafile"):
            context.load_verify_locations(kafka["ssl_cafile"])
        else:
            context.load_default_certs()
        if kafka.get("ssl_certfile"):
            context.load_cert_chain(
                certfile=kafka["ssl_certfile"],
                keyfile=kafka.get("ssl_keyfile"),
                password=kafka.get("ssl_password"),
            )
        if kafka.get("ssl_crlfile"):
            context.load_verify_locations(kafka["ssl_crlfile"])
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    except (OSError, ssl.SSLError) as error:
        # The error names the file, never the password: safe to show.
        raise ConfigFileError(f"cannot set up TLS to Kafka from KAFKA_SSL_*: {error}") from error
    return context


def redis_url(environ: Mapping[str, str] | None = None) -> str:
    """``REDIS_URL`` (``redis://`` or ``rediss://``)."""
    env = os.environ if environ is None else environ
    url = env.get("REDIS_URL")
    if not url:
        raise ConfigFileError(
            "REDIS_URL is not set; start a local stack with 'eval \"$(driftline stack up)\"'"
        )
    return url


def redacted_url(url: str) -> str:
    """``url`` with its password, if it has one, replaced by ``***``: for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def signing_key(environ: Mapping[str, str] | None = None) -> bytes:
    """The artifact signing key: ``DRIFTLINE_SIGNING_KEY``, or the file ``..._FILE`` names."""
    env = os.environ if environ is None else environ
    if env.get("DRIFTLINE_SIGNING_KEY"):
        return env["DRIFTLINE_SIGNING_KEY"].encode()
    key_file = env.get("DRIFTLINE_SIGNING_KEY_FILE")
    if key_file:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as error:
            raise ConfigFileError(f"cannot read DRIFTLINE_SIGNING_KEY_FILE: {error}") from error
        if key:
            return key
    raise ConfigFileError(
        "no artifact signing key: set DRIFTLINE_SIGNING_KEY or DRIFTLINE_SIGNING_KEY_FILE"
    )
