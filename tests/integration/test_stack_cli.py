"""``driftline stack up | status | down`` as a user runs them, on a stack of its own."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import redis

from streams.stack import LocalStack
from streams.stack.broker import broker_answers
from streams.stack.process import is_alive


def fake_worker(tmp_path: Path, command: str, env: dict) -> subprocess.Popen:
    """A process that looks like ``driftline COMMAND`` (the console script) and only sleeps."""
    script = tmp_path / "bin" / "driftline"
    script.parent.mkdir(exist_ok=True)
    script.write_text("import time\ntime.sleep(120)\n")
    return subprocess.Popen([sys.executable, str(script), command, "--config", "x"], env=env)


def test_up_reuses_a_healthy_stack_and_down_leaves_no_process(tmp_path, driftline_cli):
    driftline = driftline_cli
    env = {**os.environ, "DRIFTLINE_STACK_DIR": str(tmp_path / "stack")}
    first = driftline("stack", "up", env=env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert all(line.startswith("export ") for line in lines), lines
    settings = dict(line.removeprefix("export ").split("=", 1) for line in lines)
    assert set(settings) == {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "DRIFTLINE_SIGNING_KEY_FILE"}
    key_file = Path(settings["DRIFTLINE_SIGNING_KEY_FILE"])
    assert key_file.parent == tmp_path / "stack"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    stack = LocalStack(tmp_path / "stack")
    pids = [stack.pid_of("kafka"), stack.pid_of("redis")]
    workers: list[subprocess.Popen] = []
    try:
        assert broker_answers(settings["KAFKA_BOOTSTRAP_SERVERS"])
        assert redis.Redis.from_url(settings["REDIS_URL"]).ping()

        second = driftline("stack", "up", env=env)
        assert second.returncode == 0, second.stderr
        assert second.stdout == first.stdout
        assert [stack.pid_of("kafka"), stack.pid_of("redis")] == pids

        ping = driftline("ping", env={**env, **settings})
        assert ping.returncode == 0, ping.stderr

        status = driftline("stack", "status", env=env)
        assert status.returncode == 0
        assert '"answers": true' in status.stdout

        kafka_port = int(settings["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
        other_port = str(kafka_port + 1)
        moved = driftline("stack", "up", "--kafka-port", other_port, env=env)
        assert moved.returncode == 2
        assert moved.stdout == ""
        assert len(moved.stderr.strip().splitlines()) == 1, moved.stderr
        assert f"already runs with kafka on port {kafka_port}, not {other_port}" in moved.stderr
        same = driftline("stack", "up", "--kafka-port", str(kafka_port), env=env)
        assert same.stdout == first.stdout

        workers += [
            fake_worker(tmp_path, "worker", {**env, **settings}),
            fake_worker(tmp_path, "score", {**env, "REDIS_URL": settings["REDIS_URL"]}),
            fake_worker(tmp_path, "score", {**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}),
        ]
    finally:
        down = driftline("stack", "down", env=env)
    for worker in workers:
        worker.kill()
        worker.wait()
    assert down.returncode == 0, down.stderr
    # The third worker points elsewhere; the users are named in pid order.
    users = sorted([(workers[0].pid, "worker"), (workers[1].pid, "score")])
    named = ", ".join(f"driftline {command} (pid {pid})" for pid, command in users)
    killed = " ".join(str(pid) for pid, _ in users)
    assert f"still used by {named}: they retry until stopped (kill {killed})" in down.stderr
    assert not any(is_alive(pid) for pid in pids)
    assert not (tmp_path / "stack" / "kafka").exists()
    assert not key_file.exists()
    assert driftline("stack", "status", env=env).returncode == 1
    assert driftline("ping", env={**env, **settings}).returncode == 1
