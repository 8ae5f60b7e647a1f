"""Checks of docker-compose.yml: services, images, health checks, ports, volumes, commands; and of
docker-compose.cluster.yml, the three-node cluster, against it and the local stack's cluster."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKER_SERVICES = ["trainer", "scorer", "producer"]
MONITORING_SERVICES = ["prometheus", "grafana"]
METRICS = ["--metrics-port", "9464", "--metrics-address", "0.0.0.0"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: str(value) for name, value in environment.items()}


def test_services_are_the_local_stack_plus_workers_and_monitoring(
    services: dict[str, Any],
) -> None:
    assert set(services) == {"kafka", "redis", *WORKER_SERVICES, *MONITORING_SERVICES}


def test_kafka_is_a_single_kraft_node(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.3.1"
    env = env_of(kafka)
    assert env["KAFKA_NODE_ID"] == "1"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    listeners = env["KAFKA_LISTENERS"].split(",")
    assert {"PLAINTEXT://:9092", "CONTROLLER://:9093", "EXTERNAL://:29092"} == set(listeners)
    advertised = set(env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised == {"PLAINTEXT://kafka:9092", "EXTERNAL://localhost:29092"}
    protocols = dict(
        pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert {"PLAINTEXT", "CONTROLLER", "EXTERNAL"} <= set(protocols)
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    single_node = [
        name
        for name in env
        if name.endswith(("_REPLICATION_FACTOR", "_MIN_ISR", "MIN_INSYNC_REPLICAS"))
    ]
    assert "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR" in single_node
    assert "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR" in single_node
    assert all(env[name] == "1" for name in single_node)
    assert "29092:29092" in kafka["ports"]


def test_health_checks(services: dict[str, Any]) -> None:
    kafka_check = " ".join(services["kafka"]["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in (
        kafka_check
    )
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_redis_persists_to_a_named_volume(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert redis["image"] == "redis:7"
    options = redis["command"]
    # Fsynced every second, and never evicting: a worker refuses a Redis that evicts keys.
    for option, value in [
        ("--appendonly", "yes"),
        ("--appendfsync", "everysec"),
        ("--maxmemory-policy", "noeviction"),
    ]:
        assert options[options.index(option) + 1] == value
    assert "6379:6379" in redis["ports"]


def test_data_lives_in_named_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    named = set(compose["volumes"])
    for service, mount_point in [("kafka", "/var/lib/kafka/data"), ("redis", "/data")]:
        volume, target = services[service]["volumes"][0].split(":")[:2]
        assert volume in named
        assert target == mount_point
    assert env_of(services["kafka"])["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_workers_wait_for_healthy_services(services: dict[str, Any], name: str) -> None:
    worker = services[name]
    assert worker["build"] == "."
    start_after = {
        "trainer": {},
        "scorer": {"trainer": {"condition": "service_started"}},
        "producer": {
            "trainer": {"condition": "service_healthy"},
            "scorer": {"condition": "service_healthy"},
        },
    }
    assert worker["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        **start_after[name],
    }
    assert worker["healthcheck"]["test"] == ["CMD", "driftline", "ping"]
    env = env_of(worker)
    assert env.pop("DRIFTLINE_SIGNING_KEY").startswith("${DRIFTLINE_SIGNING_KEY:?")
    assert env == {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "REDIS_URL": "redis://redis:6379/0"}
    # The producer is a finite run; the long-running workers come back after a crash.
    expected_restart = "on-failure" if name == "producer" else "unless-stopped"
    assert worker["restart"] == expected_restart


def test_the_workers_refuse_to_start_without_a_signing_key(services: dict[str, Any]) -> None:
    # ``${VAR:?message}`` makes ``docker compose`` stop with the message when VAR is unset or
    # empty; a default (``:-``) would sign with a key everyone knows.
    required = re.compile(r"\$\{DRIFTLINE_SIGNING_KEY:\?[^$}]*DRIFTLINE_SIGNING_KEY[^$}]*\}")
    for name in WORKER_SERVICES:
        assert required.fullmatch(env_of(services[name])["DRIFTLINE_SIGNING_KEY"]), name
    assert "change-me" not in (REPO / "docker-compose.yml").read_text()


def test_worker_commands(services: dict[str, Any]) -> None:
    commands = {name: services[name]["command"] for name in WORKER_SERVICES}
    assert commands == {
        "trainer": ["worker", "--config", "/app/examples/sea.toml", *METRICS],
        "scorer": ["score", "--config", "/app/examples/sea.toml", *METRICS],
        "producer": [
            *["produce", "--synthetic", "sea", "--events", "100000"],
            *["--drift-at", "50000", "--rate", "500"],
        ],
    }


def test_dockerfile_runs_the_driftline_cli() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "pip install ." in dockerfile
    assert 'ENTRYPOINT ["driftline"]' in dockerfile


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_worker_command_is_accepted_by_the_cli(
    services: dict[str, Any], name: str, driftline_cli
) -> None:
    """The image's entrypoint is ``driftline``, so each command must parse as its arguments."""
    command = services[name]["command"]
    result = driftline_cli(*command, "--help", cwd=REPO, timeout=60)
    assert result.returncode == 0, f"`driftline {' '.join(command)}`:\n{result.stderr}"


@pytest.mark.parametrize(
    ("name", "repository"), [("prometheus", "prom/prometheus"), ("grafana", "grafana/grafana")]
)
def test_monitoring_images_are_official_and_pinned(
    services: dict[str, Any], name: str, repository: str
) -> None:
    image, _, tag = services[name]["image"].partition(":")
    assert image == repository
    assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin a release, not {tag!r}"


@pytest.mark.parametrize("name", MONITORING_SERVICES)
def test_monitoring_provisioning_is_mounted_read_only_from_the_repo(
    services: dict[str, Any], name: str
) -> None:
    binds = [v for v in services[name]["volumes"] if v.startswith("./")]
    assert binds, f"{name} mounts nothing from deploy/"
    for bind in binds:
        source, _, mode = bind.split(":")
        assert mode == "ro", bind
        assert (REPO / source).exists(), bind
        assert source.startswith("./deploy/"), bind


def test_prometheus_scrapes_the_trainer_and_scorer_on_their_metrics_port(
    services: dict[str, Any],
) -> None:
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for group in job["static_configs"] for t in group["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {"driftline-trainer": ["trainer:9464"], "driftline-scorer": ["scorer:9464"]}
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/rules.yml"] == "./deploy/prometheus/rules.yml"
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"


def test_grafana_answers_on_localhost_3000_with_the_dashboard_preloaded(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    datasources = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    assert [(d["type"], d["url"]) for d in datasources] == [
        ("prometheus", "http://prometheus:9090")
    ]
    providers = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/driftline.yml").read_text()
    )["providers"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts[providers[0]["options"]["path"]] == "./deploy/grafana/dashboards"
    assert (REPO / "deploy/grafana/dashboards/driftline.json").is_file()


# docker-compose.cluster.yml: the three-node cluster of `driftline stack up --brokers 3`.
NODES = ["kafka-1", "kafka-2", "kafka-3"]


@pytest.fixture(scope="module")
def cluster_services() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.cluster.yml").read_text())["services"]


def test_the_cluster_is_three_kraft_nodes_and_redis(
    cluster_services: dict[str, Any], services: dict[str, Any]
) -> None:
    assert set(cluster_services) == {*NODES, "redis"}
    for number, name in enumerate(NODES, start=1):
        node = cluster_services[name]
        assert node["image"] == services["kafka"]["image"]
        assert node["healthcheck"] == services["kafka"]["healthcheck"]
        env = env_of(node)
        assert env["KAFKA_NODE_ID"] == str(number)
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    envs = [env_of(cluster_services[name]) for name in NODES]
    assert len({env["CLUSTER_ID"] for env in envs}) == 1
    assert {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs} == {
        "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
    }
    assert cluster_services["redis"] == services["redis"]


def test_each_node_has_its_own_host_port_and_volume(cluster_services: dict[str, Any]) -> None:
    host_ports, volumes = [], []
    for name in NODES:
        node = cluster_services[name]
        (mapping,) = node["ports"]
        host_port, container_port = mapping.split(":")
        assert container_port == "29092"
        host_ports.append(host_port)
        advertised = set(env_of(node)["KAFKA_ADVERTISED_LISTENERS"].split(","))
        assert advertised == {f"PLAINTEXT://{name}:9092", f"EXTERNAL://localhost:{host_port}"}
        volume, target = node["volumes"][0].split(":")
        assert target == env_of(node)["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
        volumes.append(volume)
    assert host_ports == ["29092", "29093", "29094"]
    assert len(set(volumes)) == 3


def test_the_cluster_has_the_local_stack_s_durable_settings(
    cluster_services: dict[str, Any],
) -> None:
    from streams.stack.cluster import DURABLE_SETTINGS

    for name in NODES:
        env = env_of(cluster_services[name])
        for key, value in DURABLE_SETTINGS.items():
            assert env["KAFKA_" + key.upper().replace(".", "_")] == value, (name, key)
        assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
