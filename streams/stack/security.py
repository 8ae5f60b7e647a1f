"""The secured local stack (``driftline stack up --secure``): certificates, users, ACLs.

A secured stack keeps everything secret in ``<state dir>/secure/`` (mode 700, every file mode
600) and never puts a secret on a command line, where any local user could read it:

1. **Certificates**, made with ``openssl`` (a CA, and a broker certificate it signs for
   ``127.0.0.1`` and ``localhost``). Kafka reads them as a PEM keystore, redis-server as its
   ``tls-cert-file``/``tls-key-file``; clients trust ``ca.pem``.
2. **Users**: one random password per :data:`ROLES` member, plus the broker's own principal
   ``broker`` (the only super user). Kafka gets them as SCRAM-SHA-512 credentials when its
   storage is formatted (``kafka-storage format --add-scram``, handed over in a ``java``
   argument file), redis-server as ACL users.
3. **Broker listeners**: clients reach a ``SASL_SSL`` listener (SCRAM-SHA-512); the controller
   listener, on loopback, is ``SASL_PLAINTEXT`` with ``PLAIN`` and only the broker's user (KRaft
   keeps SCRAM credentials in the metadata log, which the controller must read before it can
   check one). KRaft's ``StandardAuthorizer`` denies what no ACL allows.
4. **ACLs** (:func:`role_acls`), created through the admin API as the broker's user once the
   broker answers.
5. **Environment files**, ``<role>.env``, one per role: the ``export`` lines a process of that
   role needs (Kafka security, a ``rediss://`` URL with the CA, the signing key file).

Who may do what (the threat model is in the README's Security section):

- ``producer``: write the event topics (labeled, unlabeled, outcomes); nothing in Redis.
- ``trainer``: read the event topics, read and write the registry (it resumes its version
  numbers from it), write the dead-letter and metrics topics; its consumer group and faust's
  topics (``<group>-...``); Redis under the deployment's prefix.
- ``scorer``: read the event topics and the registry; write predictions, labeled events (the
  join's output), dead letters, metrics and the registry (its guardrail publishes ``rollout`` and
  ``rollback`` records); its group and faust's topics; Redis under the deployment's prefix.
- ``operator``: read and write the registry, read the metrics topic (``live``); read Redis (to
  load a model).

Example (not run as a doctest: it starts Java)::

    stack = LocalStack(secure=True)
    stack.up()
    print(stack.secrets.env_file("trainer").read_text())
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
import subprocess
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.settings import (
    BOOTSTRAP_SERVERS_ENV,
    REDIS_URL_ENV,
    SIGNING_KEY_FILE_ENV,
)
from streams.stack.process import StackError, require_tool
from streams.topics import Topics

__all__ = [
    "BROKER_USER",
    "ROLES",
    "SASL_MECHANISM",
    "CertificateExpiredError",
    "Grant",
    "StackSecrets",
    "create_acls",
    "export_lines",
    "issue_certificates",
    "kafka_client_settings",
    "redis_acl_lines",
    "role_acls",
    "secure_server_properties",
]

ROLES = ("trainer", "scorer", "producer", "operator")
"""The principals of a secured stack, one per kind of process."""

BROKER_USER = "broker"
"""The broker's own principal: the super user, and the one the stack creates ACLs as."""

SASL_MECHANISM = "SCRAM-SHA-512"

CERTIFICATE_DAYS = 825
"""How long the stack's certificates last (the CA/Browser Forum's old maximum)."""

# What each role may do in Redis, under the deployment's key prefix. Workers store artifacts
# and checkpoints (scripts, transactions); an operator only loads models. No role may run
# administrative commands (CONFIG, FLUSHALL, ...): those belong to whoever runs redis-server.
_REDIS_COMMANDS = {
    "trainer": "+@read +@write +@keyspace +@scripting +@transaction +@connection -@dangerous",
    "scorer": "+@read +@write +@keyspace +@scripting +@transaction +@connection -@dangerous",
    "operator": "+@read +@connection -@dangerous",
}


class CertificateExpiredError(StackError):
    """The secured stack's broker certificate has expired."""


@dataclass(frozen=True)
class StackSecrets:
    """The secret material of a secured stack, in ``folder`` (see the module docstring)."""

    folder: Path

    @property
    def ca_certificate(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def broker_key(self) -> Path:
        return self.folder / "broker.key"

    @property
    def broker_certificate(self) -> Path:
        return self.folder / "broker.crt"

    @property
    def broker_keystore(self) -> Path:
        """The broker's key and certificate in one PEM file, as Kafka's PEM keystore wants."""
        return self.folder / "broker-keystore.pem"

    def exists(self) -> bool:
        return self.password_file(BROKER_USER).exists() and self.broker_keystore.exists()

    def password_file(self, user: str) -> Path:
        return self.folder / f"{user}.password"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()

    def env_file(self, role: str) -> Path:
        """The ``export`` lines of ``role`` (see :meth:`write_env_files`)."""
        return self.folder / f"{role}.env"

    def create(self, *, host: str) -> None:
        """Generate the CA, the broker's certificate and every password (once: kept after)."""
        if self.exists():
            return
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder.chmod(0o700)  # mkdir leaves the mode of a folder that already existed
        for user in (*ROLES, BROKER_USER):
            _write_private(self.password_file(user), secrets.token_urlsafe(24) + "\n")
        issue_certificates(self.folder, hosts=[host], days=CERTIFICATE_DAYS)
        _write_private(
            self.broker_keystore,
            self.broker_key.read_text() + self.broker_certificate.read_text(),
        )

    def check_certificate(self) -> None:
        """Raise :class:`CertificateExpiredError` if the broker's certificate has expired.

        Kafka refuses to start on an expired certificate with a long stack trace ("PKIX path
        validation failed ... validity check failed"), and redis-server would serve it: the
        stack says what happened, and how to get new ones, before starting either.
        """
        openssl = require_tool("openssl")
        certificate = str(self.broker_certificate)
        valid = subprocess.run(
            [openssl, "x509", "-checkend", "0", "-noout", "-in", certificate],
            capture_output=True,
            text=True,
            check=False,
        )
        if valid.returncode == 0:
            return
        end = subprocess.run(
            [openssl, "x509", "-enddate", "-noout", "-in", certificate],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        raise CertificateExpiredError(
            f"the secured stack's broker certificate ({certificate}) has expired "
            f"({end.removeprefix('notAfter=') or 'unknown date'}): 'driftline stack down' then "
            "'driftline stack up --secure' makes new certificates and passwords"
        )

    def scram_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments adding every user's SCRAM credential (secret)."""
        arguments = []
        for user in (*ROLES, BROKER_USER):
            arguments += [
                "--add-scram",
                f"{SASL_MECHANISM}=[name={user},password={self.password(user)}]",
            ]
        return arguments

    def kafka_settings(self, user: str) -> dict[str, Any]:
        """kafka-python security settings of ``user`` (see :func:`kafka_client_settings`)."""
        return kafka_client_settings(user, self.password(user), self.ca_certificate)

    def redis_url(self, user: str, *, host: str, port: int) -> str:
        """A ``rediss://`` URL of ``user`` that trusts the stack's CA."""
        query = urllib.parse.urlencode({"ssl_ca_certs": str(self.ca_certificate)})
        password = urllib.parse.quote(self.password(user), safe="")
        return f"rediss://{user}:{password}@{host}:{port}/0?{query}"

    def write_env_files(
        self, *, kafka_bootstrap: str, redis_host: str, redis_port: int, signing_key_file: Path
    ) -> dict[str, Path]:
        """Write ``<role>.env`` for every role; returns the files by role.

        A producer gets neither Redis nor the signing key: it only appends events.
        """
        files = {}
        for role in ROLES:
            settings = {
                BOOTSTRAP_SERVERS_ENV: kafka_bootstrap,
                **{
                    f"KAFKA_{name.upper()}": str(value)
                    for name, value in self.kafka_settings(role).items()
                },
            }
            if role != "producer":
                settings[REDIS_URL_ENV] = self.redis_url(role, host=redis_host, port=redis_port)
                settings[SIGNING_KEY_FILE_ENV] = str(signing_key_file)
            _write_private(self.env_file(role), export_lines(settings) + "\n")
            files[role] = self.env_file(role)
        return files

    @contextmanager
    def argument_file(self, arguments: list[str]) -> Iterator[Path]:
        """A ``java`` argument file (``java @file``) holding ``arguments``, removed afterwards:
        secrets in it stay out of the process list."""
        path = self.folder / "java-arguments"
        _write_private(path, "\n".join(_quote_java_argument(word) for word in arguments) + "\n")
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)


def export_lines(settings: Mapping[str, str]) -> str:
    """``export NAME=VALUE`` lines, values quoted for a POSIX shell.

    >>> export_lines({"A": "x y"})
    "export A='x y'"
    """
    import shlex

    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in settings.items())


def kafka_client_settings(user: str, password: str, ca_file: Path) -> dict[str, Any]:
    """kafka-python security settings (:attr:`streams.settings.Settings.kafka` keys) for SCRAM
    over TLS as ``user``.

    >>> kafka_client_settings("trainer", "pw", Path("/s/ca.pem"))["sasl_mechanism"]
    'SCRAM-SHA-512'
    """
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": SASL_MECHANISM,
        "sasl_plain_username": user,
        "sasl_plain_password": password,
        "ssl_cafile": str(ca_file),
    }


def issue_certificates(
    folder: Path, *, hosts: Sequence[str], days: int, ca: Path | None = None
) -> None:
    """Write ``ca.pem`` (unless ``ca`` names an existing CA folder), ``broker.key`` and
    ``broker.crt`` (for ``hosts``, ``localhost`` and ``127.0.0.1``) into ``folder`` with
    ``openssl``. ``hosts`` are addresses or DNS names (``kafka`` and ``redis`` in
    docker-compose).

    A negative ``days`` makes a certificate that has already expired (for tests).
    """
    openssl = require_tool("openssl")
    ca_folder = folder if ca is None else ca
    ca_key, ca_certificate = ca_folder / "ca.key", ca_folder / "ca.pem"
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    if ca is None:
        _openssl(
            openssl, "req", "-x509", *curve, "-keyout", ca_key, "-out", ca_certificate,
            "-days", str(max(days, 1)), "-subj", "/CN=driftline local stack CA",
        )  # fmt: skip
    request = folder / "broker.csr"
    extensions = folder / "broker.ext"
    names = {"DNS:localhost", "IP:127.0.0.1"}
    names |= {f"{'IP' if _is_address(host) else 'DNS'}:{host}" for host in hosts}
    extensions.write_text(f"subjectAltName={','.join(sorted(names))}\n")
    _openssl(
        openssl, "req", "-new", *curve, "-keyout", folder / "broker.key", "-out", request,
        "-subj", "/CN=driftline-broker",
    )  # fmt: skip
    _openssl(
        openssl, "x509", "-req", "-in", request, "-CA", ca_certificate, "-CAkey", ca_key,
        "-CAcreateserial", "-out", folder / "broker.crt", "-days", str(days),
        "-extfile", extensions,
    )  # fmt: skip
    for private in (ca_key, folder / "broker.key"):
        private.chmod(0o600)
    request.unlink()
    extensions.unlink()


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _openssl(openssl: str, *arguments: str | Path) -> None:
    result = subprocess.run(
        [openssl, *map(str, arguments)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise StackError(f"openssl {arguments[0]} failed: {result.stderr.strip()}")


def _write_private(path: Path, text: str) -> None:
    # Created with mode 600, never readable by others even for a moment.
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def _quote_java_argument(word: str) -> str:
    # In a java argument file, a double-quoted word may hold blanks; backslashes escape.
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _jaas(module: str, **options: str) -> str:
    pairs = " ".join(f'{name}="{value}"' for name, value in options.items())
    return f"org.apache.kafka.common.security.{module} required {pairs};"


def secure_server_properties(stack_secrets: StackSecrets) -> dict[str, str]:
    """The ``server.properties`` entries that secure a broker (they hold the broker's password:
    the file is mode 600)."""
    password = stack_secrets.password(BROKER_USER)
    return {
        "listener.security.protocol.map": "SECURE:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SECURE",
        "sasl.enabled.mechanisms": SASL_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
        "listener.name.secure.scram-sha-512.sasl.jaas.config": _jaas(
            "scram.ScramLoginModule", username=BROKER_USER, password=password
        ),
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": _jaas(
            "plain.PlainLoginModule",
            username=BROKER_USER,
            password=password,
            **{f"user_{BROKER_USER}": password},
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(stack_secrets.broker_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(stack_secrets.ca_certificate),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{BROKER_USER}",
        "allow.everyone.if.no.acl.found": "false",
        # Clients cannot create topics by writing to them: the stack creates them.
        "auto.create.topics.enable": "false",
    }


@dataclass(frozen=True)
class Grant:
    """One ACL: ``principal`` may ``operation`` the ``resource`` (a topic, group or the
    cluster) named ``name``, literally or as a prefix."""

    principal: str
    operation: str
    resource: str
    name: str


def role_acls(topics: Topics, *, trainer_group: str, scorer_group: str) -> list[Grant]:
    """The ACLs of every role (see the module docstring), for ``topics`` and the workers'
    consumer groups.

    A worker creates no topic of faust's own (faust's leader topic is disabled, and a worker has
    no tables: :mod:`streams.workers.app`), so it gets no topic under its group's name; it may
    create the topics it reads and writes. A worker also sees (describes) every driftline topic,
    because it creates those that are missing at start (:func:`streams.admin.ensure_topics`),
    and a topic it cannot see looks missing.

    >>> grants = role_acls(Topics.from_prefix(), trainer_group="t", scorer_group="s")
    >>> sorted({g.name for g in grants if g.principal == "User:producer"})
    ['driftline.events.labeled', 'driftline.events.outcomes', 'driftline.events.unlabeled']
    >>> any(g.principal == "User:producer" and "registry" in g.name for g in grants)
    False
    """
    events = (topics.labeled, topics.unlabeled, topics.outcomes)
    grants: list[Grant] = []

    def allow(role: str, operations: tuple[str, ...], resource: str, *names: str) -> None:
        for name in names:
            grants.extend(Grant(f"User:{role}", op, resource, name) for op in operations)

    def worker(role: str, group: str, reads: tuple[str, ...], writes: tuple[str, ...]) -> None:
        allow(role, ("DESCRIBE",), "TOPIC", *dataclasses.astuple(topics))
        allow(role, ("READ", "DESCRIBE", "DESCRIBE_CONFIGS", "CREATE"), "TOPIC", *reads)
        allow(role, ("WRITE", "DESCRIBE", "DESCRIBE_CONFIGS", "CREATE"), "TOPIC", *writes)
        allow(role, ("READ", "DESCRIBE"), "GROUP", group)

    allow("producer", ("WRITE", "DESCRIBE"), "TOPIC", *events)
    worker(
        "trainer",
        trainer_group,
        # The registry too: a trainer resumes its version numbers from it. The dead letters: a
        # trainer that claims a partition reads what its predecessor dead-lettered past the
        # checkpoint, so as not to publish it twice (streams.workers.deadletters).
        reads=(*events, topics.registry, topics.dlq),
        writes=(topics.registry, topics.dlq, topics.metrics),
    )
    worker(
        "scorer",
        scorer_group,
        # Its own outputs too, for the same reason as the trainer's dead letters.
        reads=(*events, topics.registry, topics.dlq, topics.predictions),
        writes=(topics.predictions, topics.labeled, topics.dlq, topics.metrics, topics.registry),
    )
    allow("operator", ("READ", "WRITE", "DESCRIBE"), "TOPIC", topics.registry)
    allow("operator", ("READ", "DESCRIBE"), "TOPIC", topics.metrics)
    return grants


def create_acls(bootstrap: str, stack_secrets: StackSecrets, grants: list[Grant]) -> None:
    """Create ``grants`` as the broker's user (creating an existing ACL changes nothing)."""
    from kafka import KafkaAdminClient
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="driftline-stack-acls",
        **stack_secrets.kafka_settings(BROKER_USER),
    )
    try:
        acls = [
            ACL(
                principal=grant.principal,
                host="*",
                operation=ACLOperation[grant.operation],
                permission_type=ACLPermissionType.ALLOW,
                resource_pattern=ResourcePattern(
                    ResourceType[grant.resource], grant.name, ACLResourcePatternType.LITERAL
                ),
            )
            for grant in grants
        ]
        result = admin.create_acls(acls)
        if result["failed"]:
            acl, error = result["failed"][0]
            raise StackError(
                f"the broker refused {len(result['failed'])} ACLs, e.g. {acl}: {error}"
            )
    finally:
        admin.close()


def redis_acl_lines(stack_secrets: StackSecrets, *, key_prefix: str) -> list[str]:
    """redis-server ``user`` directives: the default user off, one user per role that uses
    Redis, limited to keys under ``key_prefix`` (secret: they hold the passwords)."""
    lines = ["user default off"]
    for role, commands in _REDIS_COMMANDS.items():
        password = stack_secrets.password(role)
        lines.append(f"user {role} on >{password} resetchannels ~{key_prefix}* {commands}")
    return lines
