"""Background processes that outlive the command which started them.

The local stack's broker and Redis are started by ``driftline stack up`` and stopped by a later
``driftline stack down``, so they run in their own session and are remembered by pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class StackError(RuntimeError):
    """The local stack could not be started, inspected or stopped."""


class MissingToolError(StackError):
    """A program the local stack runs is not installed; the message says how to install it."""


INSTALL_HINTS = {
    "java": "Java 17 or newer: apt-get install -y openjdk-17-jre-headless",
    "mvn": "Maven: apt-get install -y maven",
    "redis-server": "Redis: apt-get install -y redis-server",
    "prometheus": "Prometheus: apt-get install -y prometheus",
    "openssl": "OpenSSL (certificates of `stack up --secure`): apt-get install -y openssl",
}


def require_tool(name: str) -> str:
    """Return the path of ``name`` on PATH, or raise :class:`MissingToolError` naming the fix."""
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(f"{name} not found on PATH; install {INSTALL_HINTS[name]}")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def spawn(argv: Sequence[str], *, log_path: Path, cwd: Path | None = None) -> int:
    """Start ``argv`` detached from this process's session, its output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def is_alive(pid: int) -> bool:
    """Whether ``pid`` names a running (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _reap(pid: int) -> None:
    # A child of this very process stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(pid: int, *, timeout: float = 20.0) -> bool:
    """Stop ``pid`` with SIGTERM, then SIGKILL after ``timeout`` seconds.

    Returns whether SIGKILL was needed.
    """
    return stop_all([pid], timeout=timeout)[pid]


def stop_all(pids: Sequence[int], *, timeout: float = 20.0) -> dict[int, bool]:
    """Stop every one of ``pids`` at once: SIGTERM to all, SIGKILL to those that still run
    after ``timeout`` seconds. Returns, per pid, whether SIGKILL was needed.

    At once, because the nodes of a Kafka cluster stopped one after another wait for each
    other: the last, left without a quorum, cannot finish its controlled shutdown.
    """
    running = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            running.append(pid)
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        for pid in running:
            _reap(pid)
        running = [pid for pid in running if is_alive(pid)]
        if running:
            time.sleep(0.1)
    return {pid: pid in running and kill(pid) for pid in pids}


def kill(pid: int) -> bool:
    """Kill ``pid`` with SIGKILL (no chance to clean up: a crash, for fault drills) and wait
    until it is gone. Returns whether it was still running."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    while is_alive(pid):
        _reap(pid)
        time.sleep(0.05)
    return True


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until_answering(
    pid: int, answers: Callable[[], bool], *, name: str, log: Path, timeout: float, every: float
) -> None:
    """Block until ``answers()``; raise with the log's tail if ``pid`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            raise StackError(f"{name} exited while starting; its log ends:\n{log_tail(log)}")
        if answers():
            return
        time.sleep(every)
    raise StackError(f"{name} did not answer within {timeout:.0f}s; its log ends:\n{log_tail(log)}")
