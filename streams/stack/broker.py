"""A single-node KRaft Apache Kafka broker run from the official jars, without Docker.

The jars are resolved from Maven Central by Maven through ``kafka-broker.pom.xml`` (kept beside
this module) and cached per user, once per Kafka version. A broker is then:

1. configured: one node that is both broker and controller, on loopback, every replication
   factor at 1, few internal partitions (fifty is slow to create on two cores);
2. formatted with Kafka's storage tool under a fresh cluster id;
3. started with ``java`` in its own session, so that it outlives the command that started it;
4. waited for until it answers a real metadata request.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.settings import kafka_ssl_context
from streams.stack.process import (
    StackError,
    require_tool,
    spawn,
    wait_until_answering,
)
from streams.stack.security import secure_server_properties

if TYPE_CHECKING:
    from streams.stack.security import StackSecrets

POM = Path(__file__).with_name("kafka-broker.pom.xml")
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def kafka_version() -> str:
    """The broker version pinned in the pom."""
    element = ET.parse(POM).getroot().find("m:properties/m:kafka.version", _POM_NS)
    if element is None or not element.text:
        raise StackError(f"{POM} does not pin kafka.version")
    return element.text


def cache_dir() -> Path:
    """Per-user cache for broker jars (``$DRIFTLINE_CACHE_DIR`` or the XDG cache)."""
    configured = os.environ.get("DRIFTLINE_CACHE_DIR")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "driftline"


def broker_jars(*, quiet: bool = True) -> Path:
    """The folder of the broker's runtime jars, resolving them with Maven on first use."""
    libs = cache_dir() / f"kafka-{kafka_version()}" / "libs"
    if (libs / ".complete").exists():
        return libs
    mvn = require_tool("mvn")
    # Maven is silent while it downloads (-q), and the first time is long enough to look stuck:
    # say what it fetches, and that it happens once. On stderr: ``stack up`` prints its settings
    # on stdout for ``eval``.
    print(
        f"fetching the Kafka {kafka_version()} broker jars (about 45 MB) from Maven Central "
        f"into {libs}: once per Kafka version, it takes a minute or so",
        file=sys.stderr,
        flush=True,
    )
    staging = libs.with_name(f"libs.partial-{os.getpid()}")
    argv = [
        mvn,
        "-B",
        *(["-q"] if quiet else []),
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(
            "Maven could not resolve the Kafka broker jars:\n"
            + (result.stdout + result.stderr)[-4000:]
        )
    (staging / ".complete").touch()
    if libs.exists():  # another process finished first
        return libs
    staging.rename(libs)
    return libs


def new_cluster_id() -> str:
    """A KRaft cluster id: URL-safe base64 of 16 random bytes, without padding.

    Never one that starts with ``-``, which the storage tool would read as an option (Kafka's
    own ``Uuid.randomUuid`` draws again for the same reason).
    """
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    return cluster_id


@dataclass(frozen=True)
class BrokerLayout:
    """Where one broker keeps its configuration, data and log."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "broker.log"


def server_properties(
    *,
    host: str,
    port: int,
    controller_port: int,
    data_dir: Path,
    security: Mapping[str, str] | None = None,
    node_id: int = 1,
    quorum_voters: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> str:
    """``server.properties`` for a one-node KRaft broker that is also its controller.

    With ``security`` (:func:`streams.stack.security.secure_server_properties`), clients reach a
    listener named ``SECURE`` instead of ``PLAINTEXT``, and the entries of ``security`` override
    the plaintext defaults.

    A node of a cluster (:mod:`streams.stack.cluster`) passes its ``node_id``, the cluster's
    ``quorum_voters`` (by default this node alone) and the ``overrides`` of the settings a
    single node must keep at 1 (replication factors, minimum in-sync replicas).
    """
    client_listener = "PLAINTEXT" if security is None else "SECURE"
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        # Static voters: the 4.x sample's controller.quorum.bootstrap.servers makes `format`
        # demand --standalone.
        "controller.quorum.voters": quorum_voters or f"{node_id}@{host}:{controller_port}",
        "listeners": f"{client_listener}://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"{client_listener}://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        "auto.create.topics.enable": "true",
        "log.retention.hours": "-1",
        **(overrides or {}),
        **(security or {}),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def format_and_start(
    layout: BrokerLayout,
    *,
    host: str,
    port: int,
    controller_port: int,
    secrets: StackSecrets | None = None,
) -> int:
    """Configure, format and start a broker; returns its pid (not yet ready).

    With ``secrets``, the broker is secured (:mod:`streams.stack.security`): its configuration
    holds its own password (mode 600), and the storage is formatted with every user's SCRAM
    credential, passed in a ``java`` argument file rather than on the command line.
    """
    configure(
        layout,
        server_properties(
            host=host,
            port=port,
            controller_port=controller_port,
            data_dir=layout.data,
            security=None if secrets is None else secure_server_properties(secrets),
        ),
    )
    format_storage(layout, new_cluster_id(), secrets=secrets)
    return start(layout)


def configure(layout: BrokerLayout, properties: str) -> None:
    """Write a broker's ``server.properties`` (mode 600: a secured one holds a password) and
    create its data folder."""
    layout.data.mkdir(parents=True, exist_ok=True)
    layout.config.touch(mode=0o600)
    layout.config.chmod(0o600)  # touch keeps the mode of a file that already existed
    layout.config.write_text(properties)


def format_storage(
    layout: BrokerLayout, cluster_id: str, *, secrets: StackSecrets | None = None
) -> None:
    """Format a configured broker's storage with Kafka's storage tool under ``cluster_id``
    (every node of a cluster must share it); with ``secrets``, with every user's SCRAM
    credential too."""
    java = require_tool("java")
    storage_tool = ["-cp", f"{broker_jars()}/*", "kafka.tools.StorageTool", "format"]
    storage_tool += ["-t", cluster_id, "-c", str(layout.config)]
    if secrets is None:
        formatted = subprocess.run([java, *storage_tool], capture_output=True, text=True)
    else:
        with secrets.argument_file([*storage_tool, *secrets.scram_arguments()]) as arguments:
            formatted = subprocess.run([java, f"@{arguments}"], capture_output=True, text=True)
    if formatted.returncode != 0:
        raise StackError(f"kafka storage format failed:\n{formatted.stdout}{formatted.stderr}")


def start(layout: BrokerLayout, *, heap: str = "1g", initial_heap: str = "256m") -> int:
    """Start a configured and formatted broker; returns its pid (not yet ready)."""
    return spawn(
        [
            require_tool("java"),
            f"-Xms{initial_heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-cp",
            f"{broker_jars()}/*",
            "kafka.Kafka",
            str(layout.config),
        ],
        log_path=layout.log,
    )


def broker_answers(bootstrap: str, *, timeout_ms: int = 2000, **security: Any) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request.

    ``security`` holds kafka-python's ``security_protocol``, ``sasl_*`` and ``ssl_*`` settings
    (see :attr:`streams.settings.Settings.kafka`) for a cluster that needs them.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=timeout_ms,
            # Without it kafka-python retries an unreachable address for 30 s.
            bootstrap_timeout_ms=timeout_ms,
            client_id="driftline-stack-probe",
            **security,
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.describe_cluster()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


# OpenSSL's verification codes (X509_V_ERR_*) of the failures a user can fix, in plain words.
_VERIFY_FAILURES = {
    10: "it has expired",
    18: "it is self-signed and not trusted",
    19: "it is signed by a CA that is not trusted",
    20: "it is not signed by a trusted CA",
}


def connection_problem(bootstrap: str, *, timeout_ms: int = 2000, **security: Any) -> str | None:
    """Why no broker at ``bootstrap`` answers a client with ``security`` (kafka-python
    settings), in one line that never shows a secret; None when one answers.

    kafka-python only says that it could not bootstrap, whatever the cause, so each layer is
    tried in turn:

    1. TCP: something must listen at the first address;
    2. TLS (``SSL``, ``SASL_SSL``): the broker's certificate must verify against
       ``ssl_cafile`` (an untrusted or expired certificate is named as such);
    3. SASL: the broker closes the connection on a failed login, which is all a client sees of
       a wrong user name or password;
    4. a metadata request must be answered.
    """
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    timeout = timeout_ms / 1000
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as error:
        return f"nothing answers at {host}:{port} ({error.strerror or error})"
    protocol = str(security.get("security_protocol") or "PLAINTEXT").upper()
    with raw:
        if protocol in ("SSL", "SASL_SSL"):
            try:
                context = kafka_ssl_context(security)
                context.wrap_socket(raw, server_hostname=host).close()
            except ssl.SSLCertVerificationError as error:
                cause = _VERIFY_FAILURES.get(error.verify_code, error.verify_message)
                return (
                    f"TLS: the broker's certificate is refused: {cause} "
                    f"(trusted CAs: {security.get('ssl_cafile') or 'the system store'})"
                )
            except (ssl.SSLError, OSError) as error:
                return f"TLS handshake with {host}:{port} failed: {error}"
    if broker_answers(bootstrap, timeout_ms=timeout_ms, **security):
        return None
    if protocol.startswith("SASL_"):
        return (
            f"the broker refused the SASL login of user {security.get('sasl_plain_username')!r} "
            f"({security.get('sasl_mechanism')}): wrong user name or password"
        )
    return f"the broker at {bootstrap} does not answer a metadata request"


def wait_until_ready(
    pid: int, bootstrap: str, log: Path, *, timeout: float = 90.0, **security: Any
) -> None:
    """Block until the broker answers metadata; raise with its log's tail if it dies or hangs.

    ``security`` as for :func:`broker_answers`.
    """
    wait_until_answering(
        pid,
        lambda: broker_answers(bootstrap, **security),
        name="the Kafka broker",
        log=log,
        timeout=timeout,
        every=0.5,
    )
