"""The embedded local stack: a real Kafka broker and a real Redis, started without Docker.

``driftline stack up`` and the test fixtures both use :class:`LocalStack`. Its state (pids,
ports, data folders) lives in one JSON file, so that ``status`` and ``down`` work from another
process than the one that ran ``up``.

The stack also keeps a development signing key (``signing.key``, mode 600) in its state folder:
the workers refuse to run without a key, and a newcomer should not have to invent one before the
first promotion. It lives as long as the stack's data (records signed with it stay readable), and
is never meant for anything but this local stack.

One stack per state folder: ``up`` with ports other than those of the stack already running there
is refused (:class:`PortConflictError`) rather than answered with the running stack's ports, and
``down`` names the driftline workers that still use the stack (:mod:`streams.stack.clients`),
which will retry against it until they are stopped.

``up --secure`` starts a secured stack instead (:mod:`streams.stack.security`): Kafka speaks
SASL_SSL with a SCRAM user per role and enforces ACLs, Redis speaks TLS with an ACL user per role.
It writes one environment file per role (``secure/<role>.env``) and prints the operator's
``export`` lines. A stack is secured or not for its whole life: ``up`` with the other choice is
refused until it is stopped.

``up --brokers 3`` runs Kafka as a replicated three-node KRaft cluster
(:mod:`streams.stack.cluster`) instead of one broker: services ``kafka-1`` to ``kafka-3`` in the
state file (the single broker stays ``kafka``), all three in the bootstrap address.
:meth:`LocalStack.stop_node`, :meth:`LocalStack.start_node` and ``driftline stack node
stop|kill|start ID`` are its fault drills. A running stack asked for another number of brokers
refuses (:class:`BrokerCountError`), and the secured stack has one broker only.

``up --with-prometheus`` adds a Prometheus server (:mod:`streams.stack.prometheus`) that
scrapes the workers registered in the stack's discovery folder (``metrics-sd/``, exported as
``DRIFTLINE_METRICS_SD_DIR``) and evaluates the repository's alert rules. The default stack does
not start it.

Example (not run as a doctest: it starts Java)::

    stack = LocalStack()
    endpoints = stack.up()
    print(endpoints.shell_lines())   # export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:PORT ...
    stack.down()
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streams.config import WorkerSettings
from streams.settings import (
    BOOTSTRAP_SERVERS_ENV,
    DEFAULT_REDIS_PREFIX,
    METRICS_SD_DIR_ENV,
    REDIS_PREFIX_ENV,
    REDIS_URL_ENV,
    SIGNING_KEY_FILE_ENV,
)
from streams.stack import broker, cluster, prometheus, redis_server, security
from streams.stack.clients import StackClient, find_clients
from streams.stack.process import (
    MissingToolError,
    StackError,
    free_port,
    is_alive,
    stop,
    stop_all,
)
from streams.stack.process import kill as _kill  # stop_node's argument is named kill
from streams.stack.security import BROKER_USER, StackSecrets
from streams.topics import Topics

__all__ = [
    "PROMETHEUS_URL_ENV",
    "BrokerCountError",
    "Endpoints",
    "LocalStack",
    "MissingToolError",
    "PortConflictError",
    "SecurityMismatchError",
    "StackClient",
    "StackError",
    "StackSecrets",
    "default_state_dir",
]


PROMETHEUS_URL_ENV = "DRIFTLINE_PROMETHEUS_URL"
"""Where the stack's Prometheus answers queries (set by ``stack up --with-prometheus``)."""


class PortConflictError(StackError):
    """``up`` was asked for a port other than the one the running stack listens on."""


class SecurityMismatchError(StackError):
    """``up`` was asked for a secured stack where a plaintext one runs, or the reverse."""


class BrokerCountError(StackError):
    """``up`` was asked for a number of Kafka brokers other than the running stack's."""


BROKER_COUNTS = (1, 3)
"""The Kafka brokers a stack may run: one, or a cluster that survives the loss of one."""


def default_state_dir() -> Path:
    """``$DRIFTLINE_STACK_DIR``, else the XDG state folder."""
    configured = os.environ.get("DRIFTLINE_STACK_DIR")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "driftline" / "stack"


@dataclass(frozen=True)
class Endpoints:
    """How clients reach the stack."""

    kafka_bootstrap: str
    redis_url: str
    signing_key_file: Path | None = None
    prometheus_url: str | None = None
    metrics_sd_dir: Path | None = None
    """The folder workers register in for Prometheus (with ``prometheus_url`` only)."""
    kafka_security: dict[str, str] | None = None
    """``KAFKA_SECURITY_*``, ``KAFKA_SASL_*`` and ``KAFKA_SSL_*`` variables (secured stack)."""
    env_files: dict[str, Path] | None = None
    """A secured stack's environment file per role (``trainer``, ``scorer``, ...)."""

    def shell_lines(self) -> str:
        """``export`` lines, so that ``eval "$(driftline stack up)"`` sets them for every command
        run from that shell afterwards (a bare assignment would not reach child processes)."""
        settings = {
            BOOTSTRAP_SERVERS_ENV: self.kafka_bootstrap,
            **(self.kafka_security or {}),
            REDIS_URL_ENV: self.redis_url,
        }
        if self.signing_key_file is not None:
            settings[SIGNING_KEY_FILE_ENV] = str(self.signing_key_file)
        if self.prometheus_url is not None and self.metrics_sd_dir is not None:
            settings[PROMETHEUS_URL_ENV] = self.prometheus_url
            settings[METRICS_SD_DIR_ENV] = str(self.metrics_sd_dir)
        return security.export_lines(settings)


@dataclass
class _Service:
    pid: int
    port: int
    root: str
    controller_port: int = 0


def _kafka_nodes(services: dict[str, _Service]) -> dict[str, int]:
    """The Kafka services by name, with their node ids, in node order: ``kafka`` (node 1) in a
    one-broker stack, ``kafka-1`` to ``kafka-3`` in a cluster."""
    nodes = {name: 1 for name in services if name == "kafka"}
    nodes.update(
        {name: int(name.removeprefix("kafka-")) for name in services if name.startswith("kafka-")}
    )
    return dict(sorted(nodes.items(), key=lambda item: item[1]))


def _cluster_node(node_id: int, service: _Service) -> cluster.Node:
    return cluster.Node(node_id, service.port, service.controller_port, Path(service.root))


class LocalStack:
    """Starts, inspects and stops one local broker (or a 3-node cluster) and one redis-server.

    Parameters
    ----------
    state_dir
        Folder for the state file, data and logs; defaults to :func:`default_state_dir`.
    host
        Loopback address to bind.

    Attributes
    ----------
    secrets
        The secured stack's certificates, passwords and environment files (used only by a stack
        started with ``up(secure=True)``).
    """

    def __init__(self, state_dir: Path | None = None, *, host: str = "127.0.0.1") -> None:
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.host = host
        self.secrets = StackSecrets(self.state_dir / "secure")

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def signing_key_file(self) -> Path:
        """The development signing key of this stack (created by :meth:`up`)."""
        return self.state_dir / "signing.key"

    def _ensure_signing_key(self) -> Path:
        path = self.signing_key_file
        if path.exists():
            return path
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Created with mode 600 from the start: no moment where another user could read it.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        return path

    def _load(self) -> dict[str, _Service]:
        try:
            raw = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return {}
        return {name: _Service(**service) for name, service in raw.items()}

    def _save(self, services: dict[str, _Service]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._state_file.write_text(json.dumps({k: asdict(v) for k, v in services.items()}))

    @property
    def metrics_sd_dir(self) -> Path:
        """Where workers register for the stack's Prometheus (file-based service discovery)."""
        return self.state_dir / "metrics-sd"

    def _prometheus_url(self, services: dict[str, _Service]) -> str | None:
        service = services.get("prometheus")
        return None if service is None else f"http://{self.host}:{service.port}"

    @property
    def secure(self) -> bool:
        """Whether this stack was started secured (``up(secure=True)``)."""
        return self.secrets.exists()

    def _endpoints(self, services: dict[str, _Service]) -> Endpoints:
        """The operator's endpoints on a secured stack; everything on a plaintext one."""
        prometheus_url = self._prometheus_url(services)
        kafka_bootstrap = ",".join(
            f"{self.host}:{services[name].port}" for name in _kafka_nodes(services)
        )
        redis_port = services["redis"].port
        redis_url = f"redis://{self.host}:{redis_port}/0"
        kafka_security, env_files = None, None
        if self.secure:
            redis_url = self.secrets.redis_url("operator", host=self.host, port=redis_port)
            kafka_security = {
                f"KAFKA_{name.upper()}": str(value)
                for name, value in self.secrets.kafka_settings("operator").items()
            }
            env_files = {role: self.secrets.env_file(role) for role in security.ROLES}
        return Endpoints(
            kafka_bootstrap=kafka_bootstrap,
            redis_url=redis_url,
            signing_key_file=self._ensure_signing_key(),
            prometheus_url=prometheus_url,
            metrics_sd_dir=self.metrics_sd_dir if prometheus_url else None,
            kafka_security=kafka_security,
            env_files=env_files,
        )

    def admin_settings(self) -> dict[str, Any]:
        """kafka-python settings of the broker's own (super) user on a secured stack; none on a
        plaintext one. For the stack's own probes and for tests, never for workers."""
        return self.secrets.kafka_settings(BROKER_USER) if self.secure else {}

    def _healthy(self, services: dict[str, _Service]) -> bool:
        """Whether every Kafka node and Redis run and answer (Prometheus, optional, is checked
        apart)."""
        kafka = list(_kafka_nodes(services))
        if not kafka or "redis" not in services:
            return False
        if not all(is_alive(services[name].pid) for name in [*kafka, "redis"]):
            return False
        return all(
            broker.broker_answers(f"{self.host}:{services[name].port}", **self.admin_settings())
            for name in kafka
        ) and redis_server.answers(self._endpoints(services).redis_url)

    def up(
        self,
        *,
        kafka_port: int | None = None,
        redis_port: int | None = None,
        with_prometheus: bool = False,
        secure: bool = False,
        brokers: int | None = None,
    ) -> Endpoints:
        """Start the broker and Redis (or reuse a healthy running pair) and wait until ready;
        with ``with_prometheus``, a Prometheus server too (added to a running stack); with
        ``secure``, secured (see the module docstring), with the driftline topics created and
        the ACLs of :func:`streams.stack.security.role_acls` for the default consumer groups.
        With ``brokers=3``, Kafka is a three-node cluster (:mod:`streams.stack.cluster`),
        ``kafka_port`` its first node's port; by default one broker, or as many as run.

        Raises :class:`PortConflictError` if a healthy stack runs with another port than
        ``kafka_port`` or ``redis_port``: reusing it would hand out addresses the caller did
        not ask for, and replacing it would pull it from under its workers. Raises
        :class:`SecurityMismatchError` likewise if it is secured and ``secure`` is false, or
        the reverse, and :class:`BrokerCountError` if it runs another number of brokers.
        """
        if brokers is not None and brokers not in BROKER_COUNTS:
            raise StackError(f"--brokers must be 1 or 3, not {brokers}")
        if secure and (brokers or 1) != 1:
            raise StackError("the secured stack runs one broker only: leave out --brokers")
        services = self._load()
        if services and self._healthy(services):
            self._check_ports(services, kafka=kafka_port, redis=redis_port)
            running = len(_kafka_nodes(services))
            if brokers is not None and brokers != running:
                raise BrokerCountError(
                    f"the local stack at {self.state_dir} already runs {running} Kafka "
                    f"broker{'s' if running > 1 else ''}, not {brokers}; stop it first "
                    f"(driftline stack down) or leave out --brokers"
                )
            if secure != self.secure:
                raise SecurityMismatchError(
                    f"the local stack at {self.state_dir} runs "
                    f"{'secured' if self.secure else 'without security'}; stop it first "
                    f"(driftline stack down) to start it {'secured' if secure else 'plaintext'}"
                )
        else:
            services = self._start(
                kafka_port=kafka_port, redis_port=redis_port, secure=secure, brokers=brokers or 1
            )
            if secure:
                self.grant(Topics.from_env())
        if with_prometheus:
            self._ensure_prometheus(services)
        return self._endpoints(services)

    def _ensure_prometheus(self, services: dict[str, _Service]) -> None:
        current = services.get("prometheus")
        if current is not None and is_alive(current.pid):
            url = self._prometheus_url(services)
            if url is not None and prometheus.answers(url):
                return
            stop(current.pid)
        root = self.state_dir / "prometheus"
        # Files of workers from an earlier stack name ports that are gone (or reused).
        shutil.rmtree(self.metrics_sd_dir, ignore_errors=True)
        service = _Service(pid=0, port=free_port(self.host), root=str(root))
        service.pid = prometheus.start(
            root, host=self.host, port=service.port, sd_dir=self.metrics_sd_dir
        )
        services["prometheus"] = service
        self._save(services)
        url = f"http://{self.host}:{service.port}"
        prometheus.wait_until_ready(service.pid, url, root / "prometheus.log")

    def grant(
        self,
        topics: Topics,
        *,
        trainer_group: str = WorkerSettings.group,
        scorer_group: str | None = None,
        partitions: int = WorkerSettings.partitions,
    ) -> None:
        """On a secured stack, create ``topics`` and the ACLs that let each role use them, for
        workers in ``trainer_group`` and ``scorer_group`` (default: the trainer's group with
        ``-scorer``, as :func:`streams.workers.scorer.create_app` names it). Idempotent; topics
        that exist keep their partitions."""
        from streams.admin import ensure_topics

        if not self.secure:
            raise StackError(f"the local stack at {self.state_dir} is not secured: no ACLs")
        bootstrap = f"{self.host}:{self._service('kafka').port}"
        admin = {"bootstrap_servers": bootstrap, **self.admin_settings()}
        ensure_topics(topics, admin, partitions=partitions)
        security.create_acls(
            bootstrap,
            self.secrets,
            security.role_acls(
                topics,
                trainer_group=trainer_group,
                scorer_group=scorer_group or f"{trainer_group}-scorer",
            ),
        )

    def _service(self, name: str) -> _Service:
        services = self._load()
        if name not in services:
            raise StackError(f"no {name} in the local stack at {self.state_dir}")
        return services[name]

    def _start(
        self,
        *,
        kafka_port: int | None,
        redis_port: int | None,
        secure: bool = False,
        brokers: int = 1,
    ) -> dict[str, _Service]:
        services = self._load()
        if services:
            self.down()
        if secure:
            self.secrets.create(host=self.host)
            self.secrets.check_certificate()
        else:
            # Secrets kept from an earlier secured stack (down --keep-data) would secure Redis.
            shutil.rmtree(self.secrets.folder, ignore_errors=True)
        kafka_root = self.state_dir / "kafka"
        redis_root = self.state_dir / "redis"
        services = {
            "redis": _Service(pid=0, port=redis_port or free_port(self.host), root=str(redis_root)),
        }
        if brokers == 1:
            services["kafka"] = _Service(
                pid=0,
                port=kafka_port or free_port(self.host),
                controller_port=free_port(self.host),
                root=str(kafka_root),
            )
        else:
            nodes = cluster.new_nodes(
                self.state_dir, host=self.host, count=brokers, first_port=kafka_port
            )
            for node in nodes:
                services[f"kafka-{node.node_id}"] = _Service(
                    pid=0, port=node.port, root=str(node.root), controller_port=node.controller_port
                )
        try:
            services["redis"].pid = redis_server.start(
                redis_root,
                host=self.host,
                port=services["redis"].port,
                security=self._redis_security(),
            )
            self._save(services)
            if brokers == 1:
                services["kafka"].pid = broker.format_and_start(
                    broker.BrokerLayout(kafka_root),
                    host=self.host,
                    port=services["kafka"].port,
                    controller_port=services["kafka"].controller_port,
                    secrets=self.secrets if secure else None,
                )
            else:
                for node_id, pid in cluster.format_and_start(nodes, host=self.host).items():
                    services[f"kafka-{node_id}"].pid = pid
            self._save(services)
            endpoints = self._endpoints(services)
            redis_server.wait_until_ready(
                services["redis"].pid, endpoints.redis_url, redis_root / "redis.log"
            )
            for node_id in self.node_ids():
                self._wait_for_node(node_id)
            if secure:
                self.secrets.write_env_files(
                    kafka_bootstrap=endpoints.kafka_bootstrap,
                    redis_host=self.host,
                    redis_port=services["redis"].port,
                    signing_key_file=self.signing_key_file,
                )
        except BaseException:
            self.down()
            raise
        return services

    def _redis_security(self) -> redis_server.RedisSecurity | None:
        if not self.secure:
            return None
        return redis_server.RedisSecurity(
            certificate=self.secrets.broker_certificate,
            key=self.secrets.broker_key,
            ca_certificate=self.secrets.ca_certificate,
            acl_lines=security.redis_acl_lines(
                self.secrets, key_prefix=os.environ.get(REDIS_PREFIX_ENV, DEFAULT_REDIS_PREFIX)
            ),
        )

    def _check_ports(self, services: dict[str, _Service], **wanted: int | None) -> None:
        # A cluster's Kafka port is its first node's, as ``up(kafka_port=...)`` chose it.
        running = {"kafka": services[next(iter(_kafka_nodes(services)))].port}
        running["redis"] = services["redis"].port
        for name, port in wanted.items():
            if port is not None and port != running[name]:
                raise PortConflictError(
                    f"the local stack at {self.state_dir} already runs with {name} on port "
                    f"{running[name]}, not {port}; stop it first (driftline stack down) "
                    f"or leave out --{name}-port"
                )

    def clients(self) -> list[StackClient]:
        """The driftline workers (``worker``, ``score``) that use this stack's Kafka or Redis."""
        services = self._load()
        if not services:
            return []
        return find_clients([f"{self.host}:{service.port}" for service in services.values()])

    def status(self) -> dict[str, dict[str, object]]:
        """What runs: per service its pid, port, whether the process lives and answers."""
        services = self._load()
        report: dict[str, dict[str, object]] = {}
        kafka = _kafka_nodes(services)
        for name, service in services.items():
            alive = service.pid > 0 and is_alive(service.pid)
            if name in kafka:
                address = f"{self.host}:{service.port}"
                answers = alive and broker.broker_answers(address, **self.admin_settings())
            elif name == "prometheus":
                address = f"http://{self.host}:{service.port}"
                answers = alive and prometheus.answers(address)
            else:
                address = f"redis{'s' if self.secure else ''}://{self.host}:{service.port}/0"
                answers = alive and redis_server.answers(self._endpoints(services).redis_url)
            report[name] = {
                "pid": service.pid,
                "address": address,
                "alive": alive,
                "answers": answers,
            }
        return report

    def down(self, *, keep_data: bool = False, timeout: float = 20.0) -> list[str]:
        """Stop what :meth:`up` started (SIGTERM, then SIGKILL after ``timeout``).

        Removes the data folders and the development signing key unless ``keep_data``. Returns a
        line per stopped service, and a last line naming the driftline workers that still use
        the stack (they retry until they are stopped), if any.
        """
        clients = self.clients()
        services = self._load()
        running = {
            name: service.pid
            for name, service in services.items()
            if service.pid > 0 and is_alive(service.pid)
        }
        forced = stop_all(list(running.values()), timeout=timeout)
        stopped = [
            f"{name} (pid {pid}) stopped{' forcibly' if forced[pid] else ''}"
            for name, pid in running.items()
        ]
        if not keep_data:
            for service in services.values():
                shutil.rmtree(service.root, ignore_errors=True)
        if not keep_data:
            self.signing_key_file.unlink(missing_ok=True)
            shutil.rmtree(self.secrets.folder, ignore_errors=True)
            shutil.rmtree(self.metrics_sd_dir, ignore_errors=True)
        self._state_file.unlink(missing_ok=True)
        if clients:
            pids = " ".join(str(client.pid) for client in clients)
            stopped.append(
                f"still used by {', '.join(map(str, clients))}: they retry until stopped "
                f"(kill {pids})"
            )
        return stopped

    def stop_service(self, service: str, *, timeout: float = 20.0) -> None:
        """Stop ``"kafka"`` or ``"redis"`` alone, keeping its data and ports (fault tests)."""
        stop(self.pid_of(service), timeout=timeout)

    def start_service(self, service: str, *, wait: bool = True) -> None:
        """Start a service that :meth:`stop_service` stopped, on its ports, with its data.

        Without ``wait``, return once it is started, before it answers: for a broker that
        clients are meant to refuse (a test swaps in an expired certificate).
        """
        services = self._load()
        if service not in services:
            raise StackError(f"no {service} in the local stack at {self.state_dir}")
        if service == "kafka":
            self.start_node(1, wait=wait)
            return
        entry, endpoints = services[service], self._endpoints(services)
        if self.secure:
            self.secrets.check_certificate()
        entry.pid = redis_server.start(
            Path(entry.root), host=self.host, port=entry.port, security=self._redis_security()
        )
        self._save(services)
        redis_server.wait_until_ready(
            entry.pid, endpoints.redis_url, Path(entry.root) / "redis.log"
        )

    def pid_of(self, service: str) -> int:
        """The pid of ``"kafka"`` or ``"redis"`` as recorded by :meth:`up`."""
        services = self._load()
        if service not in services:
            raise StackError(f"no {service} in the local stack at {self.state_dir}")
        return services[service].pid

    # Kafka nodes: node 1 alone in a one-broker stack, 1 to 3 in a cluster (fault drills).

    def node_ids(self) -> list[int]:
        """The ids of the stack's Kafka nodes (none when it is not running)."""
        return list(_kafka_nodes(self._load()).values())

    def _node(self, node_id: int) -> tuple[str, _Service]:
        services = self._load()
        for name, known_id in _kafka_nodes(services).items():
            if known_id == node_id:
                return name, services[name]
        raise StackError(
            f"no Kafka node {node_id} in the local stack at {self.state_dir} "
            f"(its nodes: {', '.join(map(str, self.node_ids())) or 'none, it is not running'})"
        )

    def bootstrap_of(self, node_id: int) -> str:
        """``host:port`` of one Kafka node alone."""
        return f"{self.host}:{self._node(node_id)[1].port}"

    def stop_node(self, node_id: int, *, kill: bool = False, timeout: float = 20.0) -> None:
        """Stop one Kafka node, keeping its data and ports: with SIGTERM (a controlled shutdown,
        SIGKILL after ``timeout``), or with ``kill`` at once with SIGKILL, as in a crash."""
        pid = self._node(node_id)[1].pid
        if pid > 0 and kill:
            _kill(pid)
        elif pid > 0:
            stop(pid, timeout=timeout)

    def start_node(self, node_id: int, *, wait: bool = True) -> None:
        """Start a Kafka node that :meth:`stop_node` stopped, on its ports, with its data; one
        that runs is left alone.

        With ``wait``, return once it answers on its own address; without, once it is started
        (for a broker that clients are meant to refuse: a test swaps in an expired certificate).
        """
        name, entry = self._node(node_id)
        if self.secure:
            self.secrets.check_certificate()
        if not (entry.pid > 0 and is_alive(entry.pid)):
            if name == "kafka":
                entry.pid = broker.start(broker.BrokerLayout(Path(entry.root)))
            else:
                entry.pid = cluster.start(_cluster_node(node_id, entry))
            services = self._load()
            services[name] = entry
            self._save(services)
        if wait:
            self._wait_for_node(node_id)

    def _wait_for_node(self, node_id: int) -> None:
        _, entry = self._node(node_id)
        broker.wait_until_ready(
            entry.pid,
            self.bootstrap_of(node_id),
            broker.BrokerLayout(Path(entry.root)).log,
            **self.admin_settings(),
        )
