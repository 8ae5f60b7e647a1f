"""Fixtures that give every test run a real Kafka broker and a real Redis.

Where they come from, in order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL`` when set (each on its own);
2. testcontainers, when a Docker engine answers a ping;
3. driftline's own local stack (``streams.stack.LocalStack``): the broker's jars from Maven
   Central run under ``java``, and Debian's redis-server; torn down at the end of the session.

When none works, a test that needs them is skipped on a developer's machine and FAILS in CI
(``CI=true``): in CI the real-broker tests never turn into skips.

``kafka_cluster`` is a replicated 3-node KRaft cluster for fault tests, started only for the tests
that ask for it: ``KAFKA_CLUSTER_BOOTSTRAP_SERVERS`` when set (with ``REDIS_URL``, else the
``redis_url`` above), otherwise a local stack of its own (``driftline stack up --brokers 3``) with
its own Redis, torn down at the end of the session. Only the latter's nodes can be stopped and
killed: :meth:`KafkaCluster.node_control` skips (fails in CI) a test that needs that on the former.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from streams.stack import LocalStack


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    redis_url: str
    origin: str
    local_stack: object | None = None


def _unavailable(message: str) -> NoReturn:
    """Skip the test on a developer's machine; fail it in CI, where it must never be skipped."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _docker_engine_answers() -> bool:
    try:
        import docker

        return bool(docker.from_env(timeout=3).ping())
    except Exception:  # any failure means: no usable engine
        return False


KAFKA_IMAGE = "apache/kafka:4.3.1"
"""The broker docker-compose.yml runs, and that ``driftline stack`` downloads the jars of."""

_KAFKA_START_SCRIPT = "/tmp/driftline-start-kafka.sh"
# One KRaft node, broker and controller, with the settings docker-compose.yml gives it. Clients
# on the host use PLAINTEXT (9092, advertised at its mapped port once the container runs); the
# broker talks to itself on BROKER and CONTROLLER.
_KAFKA_ENV = {
    "CLUSTER_ID": "5L6g3nShT-eMCtK--X86sw",
    "KAFKA_NODE_ID": "1",
    "KAFKA_PROCESS_ROLES": "broker,controller",
    "KAFKA_LISTENERS": "PLAINTEXT://:9092,BROKER://:9093,CONTROLLER://:9094",
    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
        "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT"
    ),
    "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
    "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
    "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9094",
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
    "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
}


@contextlib.contextmanager
def _kafka_container() -> Iterator[str]:
    """A KRaft broker of the apache/kafka image; yields its bootstrap address.

    The address clients must use is only known once Docker has mapped the port, and the broker
    must advertise it: so the container waits for a start script, written once it runs, that
    sets ``KAFKA_ADVERTISED_LISTENERS`` and starts the image's own launcher.
    """
    import io
    import re
    import tarfile

    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = DockerContainer(KAFKA_IMAGE).with_exposed_ports(9092).with_envs(**_KAFKA_ENV)
    container.with_command(
        [
            "sh",
            "-c",
            f"while [ ! -f {_KAFKA_START_SCRIPT} ]; do sleep 0.1; done; "
            f"exec sh {_KAFKA_START_SCRIPT}",
        ]
    )
    with container:
        bootstrap = f"{container.get_container_host_ip()}:{container.get_exposed_port(9092)}"
        script = (
            f"export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://{bootstrap},BROKER://localhost:9093\n"
            "exec /etc/kafka/docker/run\n"
        ).encode()
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            entry = tarfile.TarInfo(_KAFKA_START_SCRIPT.lstrip("/"))
            entry.size, entry.mode = len(script), 0o755
            tar.addfile(entry, io.BytesIO(script))
        container.get_wrapped_container().put_archive("/", archive.getvalue())
        ready = LogMessageWaitStrategy(re.compile(r"Kafka Server started"))
        ready.with_startup_timeout(120).wait_until_ready(container)
        yield bootstrap


@contextlib.contextmanager
def _containers() -> Iterator[Services]:
    from testcontainers.community.redis import RedisContainer

    with _kafka_container() as bootstrap, RedisContainer("redis:7") as redis_container:
        host = redis_container.get_container_host_ip()
        port = redis_container.get_exposed_port(6379)
        yield Services(bootstrap, f"redis://{host}:{port}/0", "testcontainers")


@contextlib.contextmanager
def _local_stack(state_dir) -> Iterator[Services]:
    from streams.stack import LocalStack

    stack = LocalStack(state_dir)
    try:
        endpoints = stack.up()
        yield Services(endpoints.kafka_bootstrap, endpoints.redis_url, "local stack", stack)
    finally:
        stack.down()


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    kafka_env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    redis_env = os.environ.get("REDIS_URL")
    if kafka_env and redis_env:
        yield Services(kafka_env, redis_env, "environment")
        return
    exit_stack = contextlib.ExitStack()
    try:
        source = (
            _containers()
            if _docker_engine_answers()
            else _local_stack(tmp_path_factory.mktemp("stack"))
        )
        started = exit_stack.enter_context(source)
    except Exception as error:
        _unavailable(f"could not start Kafka and Redis for the tests: {error}")
    with exit_stack:
        yield Services(
            kafka_env or started.kafka_bootstrap,
            redis_env or started.redis_url,
            started.origin,
            started.local_stack,
        )


@dataclass(frozen=True)
class KafkaCluster:
    """A 3-node Kafka cluster: ``kafka_bootstrap`` lists every node."""

    kafka_bootstrap: str
    redis_url: str
    stack: LocalStack | None = None
    """The local stack that runs it (``stop_node``, ``start_node``, ...); None for the cluster of
    ``KAFKA_CLUSTER_BOOTSTRAP_SERVERS``, whose nodes the tests cannot stop."""

    def node_control(self) -> LocalStack:
        """The stack, for a test that stops or kills nodes: skipped (failed in CI) without."""
        if self.stack is None:
            _unavailable(
                f"{CLUSTER_BOOTSTRAP_ENV} names a cluster whose nodes this test cannot stop or kill"
            )
        return self.stack


CLUSTER_BOOTSTRAP_ENV = "KAFKA_CLUSTER_BOOTSTRAP_SERVERS"


@pytest.fixture(scope="session")
def kafka_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaCluster]:
    """A replicated 3-node KRaft cluster and a Redis (see the module docstring)."""
    external = os.environ.get(CLUSTER_BOOTSTRAP_ENV)
    if external:
        yield KafkaCluster(
            external, os.environ.get("REDIS_URL") or request.getfixturevalue("redis_url")
        )
        return
    from streams.stack import LocalStack

    stack = LocalStack(tmp_path_factory.mktemp("cluster"))
    try:
        endpoints = stack.up(brokers=3)
    except Exception as error:
        stack.down()
        _unavailable(f"could not start a 3-node Kafka cluster for the tests: {error}")
    try:
        yield KafkaCluster(endpoints.kafka_bootstrap, endpoints.redis_url, stack)
    finally:
        stack.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    """``host:port`` of a real Kafka broker."""
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(services: Services) -> str:
    """URL of a real Redis server."""
    return services.redis_url


def _unique_names() -> Callable[[str], str]:
    token = uuid.uuid4().hex[:10]
    return lambda stem: f"{stem}-{token}"


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Names no other test uses: topics, consumer groups, Redis key prefixes."""
    return _unique_names()


@pytest.fixture
def redis_client(redis_url: str, unique: Callable[[str], str]):
    """A Redis client; the keys of this test live under ``redis_client.test_prefix``."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.test_prefix = unique("test") + ":"
    yield client
    for key in client.scan_iter(match=client.test_prefix + "*"):
        client.delete(key)
    client.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/integration are integration tests."""
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def _deployment_env(kafka_bootstrap: str, redis_url: str, unique: Callable[[str], str]) -> dict:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "REDIS_URL": redis_url,
        "DRIFTLINE_SIGNING_KEY": "test-signing-key",
        "DRIFTLINE_TOPIC_PREFIX": unique("dl") + ".",
        "DRIFTLINE_REDIS_PREFIX": unique("dl") + ":",
        "DRIFTLINE__worker__group": unique("trainer"),
        "DRIFTLINE__worker__checkpoint_interval": "0.5",
    }


@contextlib.contextmanager
def _driftline_processes(
    default_env: dict, log_dir: Path
) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start ``driftline ARGS`` in the background; every one is stopped on exit, at the latest."""
    started: list[subprocess.Popen] = []

    def start(*args: str, env: dict | None = None, name: str = "driftline") -> subprocess.Popen:
        log = open(log_dir / f"{name}-{len(started)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli.main", *args],
            env=env or default_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        process.log_path = log.name
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def driftline_env(kafka_bootstrap: str, redis_url: str, unique: Callable[[str], str]) -> dict:
    """Environment for driftline processes of one test: its own topics, keys and group."""
    return _deployment_env(kafka_bootstrap, redis_url, unique)


@pytest.fixture
def spawn(driftline_env: dict, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start ``driftline ARGS`` in the background (stopped, at the latest, after the test)."""
    with _driftline_processes(driftline_env, tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def module_driftline_env(kafka_bootstrap: str, redis_url: str) -> dict:
    """Like ``driftline_env``, shared by the tests of one module (one deployment, set up once)."""
    return _deployment_env(kafka_bootstrap, redis_url, _unique_names())


@pytest.fixture(scope="module")
def module_spawn(
    module_driftline_env: dict, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., subprocess.Popen]]:
    """Like ``spawn``, for processes that serve every test of one module (stopped after it)."""
    with _driftline_processes(module_driftline_env, tmp_path_factory.mktemp("processes")) as start:
        yield start


@pytest.fixture
def driftline_cli() -> Callable[..., subprocess.CompletedProcess]:
    """Run ``driftline ARGS`` to completion (as the installed command does), capturing output."""

    def run(
        *args: str, env: dict | None = None, cwd=None, timeout: float = 180
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli.main", *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
