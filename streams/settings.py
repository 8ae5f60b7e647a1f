"""Connection settings and secrets of a deployment, read once from the environment.

Every process of a deployment (workers, ``driftline`` commands, the producer SDK, the registry
client) finds the same cluster, the same Redis namespace and the same key through one
:class:`Settings`, so that no client honours a setting another one ignores::

    settings = Settings.from_env()
    settings.kafka          # kafka-python keyword arguments: bootstrap servers and security
    settings.redis_url      # where artifacts and checkpoints live
    settings.redis_prefix   # the deployment's namespace in Redis
    settings.topics         # the deployment's topic names
    settings.signing_key()  # the key that signs artifacts and registry records

The variables:

- ``KAFKA_BOOTSTRAP_SERVERS``, plus ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and
  ``KAFKA_SSL_*``, which become kafka-python's ``security_protocol``, ``sasl_*``, ``ssl_*``;
- ``REDIS_URL`` (``rediss://`` for TLS) and ``DRIFTLINE_REDIS_PREFIX`` (default ``driftline:``);
- ``DRIFTLINE_TOPIC_PREFIX`` (see :mod:`streams.topics`);
- ``DRIFTLINE_SIGNING_KEY``, or ``DRIFTLINE_SIGNING_KEY_FILE`` naming a file that holds it.

Malformed values (a boolean that is not one) are refused by :meth:`Settings.from_env`. Missing
ones are refused only when something asks for them, because not every command needs everything:
``driftline produce`` never touches Redis, and only what signs or verifies needs the key.
Settings never show a password or the key in their ``repr``: they may end up in logs.
"""

from __future__ import annotations

import logging
import os
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from streams.topics import Topics

__all__ = [
    "BOOTSTRAP_SERVERS_ENV",
    "DEFAULT_REDIS_PREFIX",
    "PRODUCER_DURABILITY",
    "REDIS_PREFIX_ENV",
    "REDIS_URL_ENV",
    "SASL_MECHANISMS",
    "SECRET_CLIENT_SETTINGS",
    "SIGNING_KEY_ENV",
    "SIGNING_KEY_FILE_ENV",
    "Settings",
    "SettingsError",
    "authenticated_principal",
    "faust_broker_options",
    "kafka_ssl_context",
    "producer_options",
    "redacted_settings",
    "redacted_url",
]

BOOTSTRAP_SERVERS_ENV = "KAFKA_BOOTSTRAP_SERVERS"
REDIS_URL_ENV = "REDIS_URL"
REDIS_PREFIX_ENV = "DRIFTLINE_REDIS_PREFIX"
SIGNING_KEY_ENV = "DRIFTLINE_SIGNING_KEY"
SIGNING_KEY_FILE_ENV = "DRIFTLINE_SIGNING_KEY_FILE"
METRICS_SD_DIR_ENV = "DRIFTLINE_METRICS_SD_DIR"
"""The folder of Prometheus's file-based service discovery that workers register in."""
DEFAULT_REDIS_PREFIX = "driftline:"

PRODUCER_DURABILITY: Mapping[str, Any] = MappingProxyType(
    {"acks": "all", "enable_idempotence": True}
)
"""How every producer of driftline writes, in kafka-python's and aiokafka's words alike: a record
is acknowledged once every in-sync replica has it, and the client's retries never write it twice
(nor out of order). kafka-python 3 enables idempotence by default and aiokafka does not; both are
named here so that no process depends on a client's default (:func:`producer_options`, and the
workers' producer in :mod:`streams.workers.app`)."""

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")
"""The SASL mechanisms both kafka-python and faust (aiokafka) can take from the environment."""

_KAFKA_SECURITY_PREFIXES = ("KAFKA_SECURITY_", "KAFKA_SASL_", "KAFKA_SSL_")
# kafka-python settings that are booleans: the environment only holds strings, and the string
# "false" is truthy.
_BOOLEAN_KAFKA_SETTINGS = frozenset({"ssl_check_hostname"})
_TRUE_WORDS, _FALSE_WORDS = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


class SettingsError(ValueError):
    """A setting is missing or holds a bad value: fix the environment (or the file) and restart.

    :class:`streams.config.ConfigFileError` is one too, so a command can refuse every
    configuration problem with one ``except``.
    """


@dataclass(frozen=True, kw_only=True)
class Settings:
    """A deployment's connection settings and secrets (see the module docstring).

    Build it with :meth:`from_env`. ``kafka`` and ``redis_url`` raise :class:`SettingsError`
    when their variable was not set; :meth:`signing_key` reads the key (or its file) when called.
    """

    topics: Topics
    redis_prefix: str = DEFAULT_REDIS_PREFIX
    # Private: read through the properties, which say what is missing. Never shown: they may
    # hold passwords and the key.
    _bootstrap_servers: str | None = field(default=None, repr=False)
    _kafka_security: Mapping[str, Any] = field(default_factory=dict, repr=False)
    _redis_url: str | None = field(default=None, repr=False)
    _signing_key: bytes | None = field(default=None, repr=False)
    _signing_key_file: Path | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings ``environ`` (default: ``os.environ``) gives.

        >>> settings = Settings.from_env({"DRIFTLINE_TOPIC_PREFIX": "staging."})
        >>> settings.topics.registry, settings.redis_prefix
        ('staging.models.registry', 'driftline:')
        """
        env = os.environ if environ is None else environ
        return cls(
            topics=Topics.from_env(env),
            redis_prefix=env.get(REDIS_PREFIX_ENV, DEFAULT_REDIS_PREFIX),
            _bootstrap_servers=env.get(BOOTSTRAP_SERVERS_ENV) or None,
            _kafka_security=_kafka_security(env),
            _redis_url=env.get(REDIS_URL_ENV) or None,
            _signing_key=env[SIGNING_KEY_ENV].encode() if env.get(SIGNING_KEY_ENV) else None,
            _signing_key_file=(
                Path(env[SIGNING_KEY_FILE_ENV]) if env.get(SIGNING_KEY_FILE_ENV) else None
            ),
        )

    @property
    def kafka(self) -> dict[str, Any]:
        """Bootstrap servers and the security settings that pass through to every Kafka client.

        ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_PLAIN_USERNAME``,
        ``KAFKA_SASL_PLAIN_PASSWORD``, ``KAFKA_SSL_CAFILE``, ... become the kafka-python keyword
        arguments ``security_protocol``, ``sasl_mechanism``, ... (lower case, prefix removed).
        ``KAFKA_SSL_CHECK_HOSTNAME`` is read as a boolean (``true``/``false``). The faust
        workers take the same settings through :func:`faust_broker_options`. A new dict on each
        access: callers may pop from it.
        """
        if self._bootstrap_servers is None:
            raise SettingsError(
                f"{BOOTSTRAP_SERVERS_ENV} is not set; start a local stack with "
                "'eval \"$(driftline stack up)\"' or point it at your cluster"
            )
        return {"bootstrap_servers": self._bootstrap_servers, **self._kafka_security}

    @property
    def redis_url(self) -> str:
        """``REDIS_URL`` (``redis://`` or ``rediss://``)."""
        if self._redis_url is None:
            raise SettingsError(
                f"{REDIS_URL_ENV} is not set; start a local stack with "
                "'eval \"$(driftline stack up)\"'"
            )
        return self._redis_url

    def signing_key(self) -> bytes:
        """The key that signs artifacts and registry records: ``DRIFTLINE_SIGNING_KEY``, or the
        content of the file ``DRIFTLINE_SIGNING_KEY_FILE`` names (surrounding blanks removed).
        """
        if self._signing_key:
            return self._signing_key
        if self._signing_key_file is not None:
            try:
                key = self._signing_key_file.read_bytes().strip()
            except OSError as error:
                raise SettingsError(f"cannot read {SIGNING_KEY_FILE_ENV}: {error}") from error
            if key:
                return key
        raise SettingsError(
            f"no signing key (it signs artifacts and registry records): set {SIGNING_KEY_ENV} "
            f"or {SIGNING_KEY_FILE_ENV}"
        )


def _kafka_security(env: Mapping[str, str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for name, value in env.items():
        if name.startswith(_KAFKA_SECURITY_PREFIXES):
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
    raise SettingsError(f"{name} must be true or false, not {value!r}")


def faust_broker_options(kafka: Mapping[str, Any]) -> dict[str, Any]:
    """The ``faust.App`` keyword arguments that reach the cluster ``kafka`` describes.

    ``kafka`` holds kafka-python settings (:attr:`Settings.kafka`): ``broker`` lists its
    bootstrap servers as ``kafka://`` URLs and, unless ``security_protocol`` is ``PLAINTEXT``
    (the default), ``broker_credentials`` carries the same security: a ``faust.SSLCredentials``
    for ``SSL``, a ``faust.SASLCredentials`` (or ``GSSAPICredentials``) for ``SASL_PLAINTEXT``
    and ``SASL_SSL``. The TLS context is built as kafka-python builds its own, from
    ``ssl_cafile``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_password``, ``ssl_crlfile`` and
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
        raise SettingsError(
            f"KAFKA_SECURITY_PROTOCOL {protocol!r} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT "
            "or SASL_SSL"
        )
    ssl_context = kafka_ssl_context(kafka) if protocol == "SASL_SSL" else None
    mechanism = str(kafka.get("sasl_mechanism") or "").upper()
    if mechanism not in SASL_MECHANISMS:
        raise SettingsError(
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


def producer_options(kafka: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """The keyword arguments of a kafka-python ``KafkaProducer`` for the cluster ``kafka``
    describes (:attr:`Settings.kafka`): :data:`PRODUCER_DURABILITY`, then the connection, then
    ``overrides`` (the producer SDK's caller may tune its own producer)."""
    return {**PRODUCER_DURABILITY, **kafka, **overrides}


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
        raise SettingsError(f"cannot set up TLS to Kafka from KAFKA_SSL_*: {error}") from error
    return context


def authenticated_principal(kafka: Mapping[str, Any]) -> str | None:
    """The name the broker authenticates a client with ``kafka`` settings as, or None when it
    does not authenticate it (``PLAINTEXT``, or TLS without a client certificate).

    It is the SASL user name (``PLAIN``, ``SCRAM-*``), or, for ``SSL`` with a client
    certificate, the certificate's subject as Kafka's default principal builder writes it
    (RFC 2253: ``CN=alice,O=example``). The broker refuses a connection whose login fails, so a
    name returned here is one it vouched for once the connection works. Kerberos (``GSSAPI``)
    principals come from the ticket, not the settings: None.

    >>> authenticated_principal({"security_protocol": "SASL_SSL", "sasl_plain_username": "ops"})
    'ops'
    >>> authenticated_principal({"bootstrap_servers": "localhost:9092"}) is None
    True
    """
    protocol = str(kafka.get("security_protocol") or "PLAINTEXT").upper()
    if protocol.startswith("SASL_"):
        if str(kafka.get("sasl_mechanism") or "").upper() == "GSSAPI":
            return None
        return kafka.get("sasl_plain_username") or None
    if protocol == "SSL" and kafka.get("ssl_certfile"):
        return _certificate_subject(str(kafka["ssl_certfile"]))
    return None


def _certificate_subject(path: str) -> str:
    # The standard library parses certificates only through this helper (what ssl's own tests
    # use); it reads the first certificate of a PEM file.
    decoded = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
    # Kafka writes the subject's relative names last to first, as X500Principal.getName() does.
    names = [
        f"{_RFC2253_NAMES.get(key, key)}={value}"
        for rdn in decoded["subject"]
        for key, value in rdn
    ]
    return ",".join(reversed(names))


_RFC2253_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
}


def redacted_url(url: str) -> str:
    """``url`` with its password, if it has one, replaced by ``***``: for messages and logs.

    >>> redacted_url("rediss://user:s3cret@host:6380/1")
    'rediss://user:***@host:6380/1'
    """
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


SECRET_CLIENT_SETTINGS = frozenset({"sasl_plain_password", "ssl_password"})
"""Kafka client settings whose values never appear in a log line."""


def redacted_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with every secret's value replaced by ``***``.

    >>> redacted_settings({"sasl_plain_username": "trainer", "sasl_plain_password": "s3cret"})
    {'sasl_plain_username': 'trainer', 'sasl_plain_password': '***'}
    """
    return {
        name: "***" if name in SECRET_CLIENT_SETTINGS and value else value
        for name, value in settings.items()
    }


class _RedactClientSettings(logging.Filter):
    """Redacts the client configuration kafka-python's admin client logs at debug, whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        # logging unwraps a lone mapping argument: ``record.args`` is then the mapping itself.
        if isinstance(record.args, Mapping):
            record.args = redacted_settings(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(
                redacted_settings(arg) if isinstance(arg, Mapping) else arg for arg in record.args
            )
        return True


# Installed on import: every process that holds Kafka secrets reads them through this module.
logging.getLogger("kafka.admin.client").addFilter(_RedactClientSettings())
