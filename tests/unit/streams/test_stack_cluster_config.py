"""The 3-node stack's configuration and bookkeeping, without starting Java."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import streams.cli.main as cli
from streams.stack import LocalStack, StackError
from streams.stack.broker import server_properties
from streams.stack.cluster import DURABLE_SETTINGS, new_nodes, node_properties
from streams.stack.process import is_alive, stop_all

HOST = "127.0.0.1"


def parse(properties: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in properties.splitlines())


@pytest.fixture
def configs(tmp_path: Path) -> dict[int, dict[str, str]]:
    nodes = new_nodes(tmp_path, host=HOST)
    return {node.node_id: parse(node_properties(node, nodes, host=HOST)) for node in nodes}


def test_every_node_is_broker_and_controller_with_the_same_static_voters(configs) -> None:
    assert sorted(configs) == [1, 2, 3]
    voters = {config["controller.quorum.voters"] for config in configs.values()}
    assert len(voters) == 1
    (voters_line,) = voters
    assert [voter.split("@")[0] for voter in voters_line.split(",")] == ["1", "2", "3"]
    for node_id, config in configs.items():
        assert config["node.id"] == str(node_id)
        assert config["process.roles"] == "broker,controller"
        controller = config["listeners"].split(",")[1].removeprefix("CONTROLLER://")
        assert f"{node_id}@{controller}" in voters_line.split(",")
        assert config["advertised.listeners"] == config["listeners"].split(",")[0]
        assert (
            "controller.quorum.bootstrap.servers" not in config
        )  # `format` would want --standalone


def test_nodes_have_their_own_ports_and_data(configs, tmp_path: Path) -> None:
    ports = [
        int(listener.rsplit(":", 1)[1])
        for config in configs.values()
        for listener in config["listeners"].split(",")
    ]
    assert len(ports) == len(set(ports)) == 6
    assert [config["log.dirs"] for config in configs.values()] == [
        str(tmp_path / f"kafka-{node_id}" / "data") for node_id in (1, 2, 3)
    ]


def test_nodes_are_durable_by_default(configs) -> None:
    for config in configs.values():
        assert config["default.replication.factor"] == "3"
        assert config["min.insync.replicas"] == "2"
        assert config["offsets.topic.replication.factor"] == "3"
        assert config["transaction.state.log.replication.factor"] == "3"
        assert config["transaction.state.log.min.isr"] == "2"
        assert config["share.coordinator.state.topic.replication.factor"] == "3"
        assert config["share.coordinator.state.topic.min.isr"] == "2"
        assert config["unclean.leader.election.enable"] == "false"
        # What keeps a small cluster quick on two cores stays as the single broker has it.
        assert config["offsets.topic.num.partitions"] == "4"
        assert config["transaction.state.log.num.partitions"] == "4"
        assert config["group.initial.rebalance.delay.ms"] == "0"
        assert int(config["group.min.session.timeout.ms"]) <= 1000
        # A killed node is fenced sooner than with Kafka's 9 s, still after several heartbeats.
        session = int(config["broker.session.timeout.ms"])
        assert session < 9000
        assert session >= 4 * int(config["broker.heartbeat.interval.ms"])


def test_the_single_broker_keeps_its_one_node_settings(tmp_path: Path) -> None:
    config = parse(server_properties(host=HOST, port=1, controller_port=2, data_dir=tmp_path))
    assert config["node.id"] == "1"
    assert config["controller.quorum.voters"] == f"1@{HOST}:2"
    assert config["offsets.topic.replication.factor"] == "1"
    assert all(config.get(key) != value for key, value in DURABLE_SETTINGS.items())


def test_the_first_node_takes_the_port_asked_for(tmp_path: Path) -> None:
    nodes = new_nodes(tmp_path, host=HOST, first_port=19092)
    assert nodes[0].port == 19092
    assert 19092 not in [port for node in nodes[1:] for port in (node.port, node.controller_port)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"secure": True, "brokers": 3}, "the secured stack runs one broker only"),
        ({"brokers": 2}, "--brokers must be 1 or 3, not 2"),
    ],
)
def test_up_refuses_before_starting_anything(tmp_path: Path, options, message) -> None:
    with pytest.raises(StackError, match=message):
        LocalStack(tmp_path / "stack").up(**options)
    assert not (tmp_path / "stack").exists()


def test_secure_with_three_brokers_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    argv = ["stack", "up", "--secure", "--brokers", "3", "--state-dir", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("driftline stack up: the secured stack runs one broker only")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["node"], "usage: driftline stack node stop|kill|start ID"),
        (["node", "kill"], "name one node"),
        (["node", "kill", "2", "--controller"], "name one node"),
        (["node", "start", "--controller"], "start takes a node ID"),
        (["node", "kill", "2"], "is not running"),
    ],
)
def test_node_drills_name_one_node(tmp_path: Path, capsys, argv, message) -> None:
    assert cli.main(["stack", *argv, "--state-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


# A stand-in for a node: it notes a SIGTERM in a file before it exits, which a SIGKILL leaves no
# time for.
FAKE_NODE = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (open(sys.argv[1], "w").write("TERM"), sys.exit(0)))
time.sleep(60)
"""


@pytest.fixture
def fake_cluster(tmp_path: Path):
    """A state file of a 3-node stack whose nodes are stand-ins (no Java)."""
    nodes = {
        n: subprocess.Popen([sys.executable, "-c", FAKE_NODE, str(tmp_path / f"{n}.signal")])
        for n in (1, 2, 3)
    }
    services = {"redis": {"pid": 0, "port": 6000, "root": str(tmp_path / "redis")}}
    for node_id, process in nodes.items():
        services[f"kafka-{node_id}"] = {
            "pid": process.pid,
            "port": 9000 + node_id,
            "root": str(tmp_path / f"kafka-{node_id}"),
            "controller_port": 9100 + node_id,
        }
    (tmp_path / "stack.json").write_text(json.dumps(services))
    time.sleep(0.5)  # the stand-ins' handlers are in place
    yield LocalStack(tmp_path), nodes
    for process in nodes.values():
        process.kill()
        process.wait()


def test_a_cluster_is_known_by_its_nodes(fake_cluster) -> None:
    stack, nodes = fake_cluster
    assert stack.node_ids() == [1, 2, 3]
    assert stack.bootstrap_of(2) == "127.0.0.1:9002"
    with pytest.raises(StackError, match=r"no Kafka node 4 .*its nodes: 1, 2, 3"):
        stack.stop_node(4)
    for process in nodes.values():  # a live one would be probed: seconds per node
        process.kill()
        process.wait()
    report = stack.status()
    assert [name for name in report if name.startswith("kafka")] == [
        "kafka-1",
        "kafka-2",
        "kafka-3",
    ]
    assert report["kafka-3"] == {
        "pid": nodes[3].pid,
        "address": "127.0.0.1:9003",
        "alive": False,
        "answers": False,
    }


def test_stop_node_and_kill_end_one_node_only(fake_cluster, tmp_path: Path) -> None:
    stack, nodes = fake_cluster
    stack.stop_node(2, kill=True)
    stack.stop_node(3)
    assert not is_alive(nodes[2].pid) and not is_alive(nodes[3].pid)
    assert not (tmp_path / "2.signal").exists()
    assert (tmp_path / "3.signal").read_text() == "TERM"
    assert nodes[1].poll() is None


def test_stop_all_stops_every_process_at_once() -> None:
    sleepers = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    forced = stop_all([process.pid for process in sleepers], timeout=5)
    assert forced == {process.pid: False for process in sleepers}
    assert not any(is_alive(process.pid) for process in sleepers)
