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
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.stack.process import (
    StackError,
    require_tool,
    spawn,
    wait_until_answering,
)

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
    """A KRaft cluster id: URL-safe base64 of 16 random bytes, without padding."""
    return base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


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


def server_properties(*, host: str, port: int, controller_port: int, data_dir: Path) -> str:
    """``server.properties`` for a one-node KRaft broker that is also its controller."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # Static voters: the 4.x sample's controller.quorum.bootstrap.servers makes `format`
        # demand --standalone.
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
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
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def format_and_start(layout: BrokerLayout, *, host: str, port: int, controller_port: int) -> int:
    """Configure, format and start a broker; returns its pid (not yet ready)."""
    java = require_tool("java")
    layout.data.mkdir(parents=True, exist_ok=True)
    layout.config.write_text(
        server_properties(
            host=host, port=port, controller_port=controller_port, data_dir=layout.data
        )
    )
    formatted = subprocess.run(
        [
            java,
            "-cp",
            f"{broker_jars()}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            new_cluster_id(),
            "-c",
            str(layout.config),
        ],
        capture_output=True,
        text=True,
    )
    if formatted.returncode != 0:
        raise StackError(f"kafka storage format failed:\n{formatted.stdout}{formatted.stderr}")
    return start(layout)


def start(layout: BrokerLayout, *, heap: str = "1g") -> int:
    """Start a configured and formatted broker; returns its pid (not yet ready)."""
    return spawn(
        [
            require_tool("java"),
            "-Xms256m",
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


def wait_until_ready(pid: int, bootstrap: str, log: Path, *, timeout: float = 90.0) -> None:
    """Block until the broker answers metadata; raise with its log's tail if it dies or hangs."""
    wait_until_answering(
        pid,
        lambda: broker_answers(bootstrap),
        name="the Kafka broker",
        log=log,
        timeout=timeout,
        every=0.5,
    )
