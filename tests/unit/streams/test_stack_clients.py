"""``stack down`` names the driftline workers that still use the stack: found from /proc."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.stack.clients import StackClient, find_clients, mentions_address, worker_command

STACK = ["127.0.0.1:19092", "127.0.0.1:6390"]


def fake_process(proc: Path, pid: int, argv: list[str], environ: dict[str, str] | None) -> None:
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "cmdline").write_bytes("\0".join(argv).encode() + b"\0")
    if environ is not None:  # None: an environment this user may not read
        entries = [f"{name}={value}" for name, value in environ.items()]
        (folder / "environ").write_bytes("\0".join(entries).encode() + b"\0")


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["/usr/bin/python3", "/r/.venv/bin/driftline", "worker", "--config", "c"], "worker"),
        (["/usr/bin/python3", "-m", "streams.cli.main", "score", "--max-wait", "9"], "score"),
        (["/usr/bin/python3", "/r/.venv/bin/driftline", "produce", "--events", "9"], None),
        (["/usr/bin/python3", "-m", "pytest", "tests/integration/test_worker.py"], None),
        (["/usr/bin/python3", "/r/.venv/bin/driftline"], None),
    ],
)
def test_a_worker_is_driftline_worker_or_score_however_started(argv, command) -> None:
    assert worker_command(argv) == command


def test_an_address_is_matched_whole_and_localhost_is_loopback() -> None:
    assert mentions_address(["KAFKA_BOOTSTRAP_SERVERS=a:1,127.0.0.1:19092"], STACK)
    assert mentions_address(["KAFKA_BOOTSTRAP_SERVERS=localhost:19092"], STACK)
    assert not mentions_address(["KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:190920"], STACK)
    assert not mentions_address(["KAFKA_BOOTSTRAP_SERVERS=10.0.0.1:19092"], STACK)


def test_the_workers_that_use_the_stack_are_found_by_pid(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    script = "/r/.venv/bin/driftline"
    fake_process(proc, 30, ["python", script, "worker"], {"REDIS_URL": "redis://127.0.0.1:6390/0"})
    fake_process(
        proc,
        20,
        ["python", "-m", "streams.cli.main", "score"],
        {"KAFKA_BOOTSTRAP_SERVERS": STACK[0]},
    )
    fake_process(proc, 40, ["python", script, "worker"], {"KAFKA_BOOTSTRAP_SERVERS": "h:9092"})
    fake_process(proc, 50, ["python", script, "produce"], {"KAFKA_BOOTSTRAP_SERVERS": STACK[0]})
    fake_process(proc, 60, ["python", script, "score"], None)  # unreadable: left out
    (proc / "self").mkdir()
    assert find_clients(STACK, proc=proc) == [StackClient(20, "score"), StackClient(30, "worker")]
    assert str(StackClient(20, "score")) == "driftline score (pid 20)"
