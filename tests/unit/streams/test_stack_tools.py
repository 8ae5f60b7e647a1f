"""The local stack names a missing tool and how to install it."""

from __future__ import annotations

import pytest

from streams.stack import LocalStack, MissingToolError
from streams.stack.broker import kafka_version, server_properties


@pytest.mark.parametrize(
    ("tool", "hint"),
    [("java", "openjdk-17"), ("mvn", "maven"), ("redis-server", "redis-server")],
)
def test_missing_tool_is_named_with_its_install(monkeypatch, tmp_path, tool, hint):
    from streams.stack import process

    real_which = process.shutil.which
    monkeypatch.setattr(process.shutil, "which", lambda n: None if n == tool else real_which(n))
    monkeypatch.setenv("DRIFTLINE_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingToolError, match=rf"{tool} not found.*{hint}"):
        LocalStack(tmp_path / "stack").up()
    assert not (tmp_path / "stack" / "stack.json").exists()


def test_the_pinned_broker_is_a_4x_release_other_than_4_0_0():
    major, minor, patch = (int(part) for part in kafka_version().split("."))
    assert major == 4
    assert (minor, patch) != (0, 0)


def test_single_node_settings_keep_internal_topics_small():
    properties = server_properties(host="127.0.0.1", port=1, controller_port=2, data_dir="/d")
    assert "process.roles=broker,controller\n" in properties
    assert "offsets.topic.replication.factor=1\n" in properties
    assert "controller.quorum.voters=1@127.0.0.1:2\n" in properties


def test_a_service_that_dies_or_never_answers_is_reported_with_its_log(tmp_path):
    from streams.stack.process import StackError, spawn, wait_until_answering

    log = tmp_path / "service.log"
    pid = spawn(["sh", "-c", "echo boom; exit 3"], log_path=log)
    with pytest.raises(StackError, match=r"(?s)svc exited while starting.*boom"):
        wait_until_answering(pid, lambda: False, name="svc", log=log, timeout=10, every=0.05)
    sleeper = spawn(["sleep", "5"], log_path=log)
    with pytest.raises(StackError, match="svc did not answer within 0s"):
        wait_until_answering(sleeper, lambda: False, name="svc", log=log, timeout=0.2, every=0.05)
