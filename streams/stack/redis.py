"""A redis-server (Debian's package) on loopback for the local stack."""

from __future__ import annotations

import time
from pathlib import Path

from streams.stack.process import StackError, is_alive, log_tail, require_tool, spawn


def start(data_dir: Path, *, host: str, port: int) -> int:
    """Start redis-server in its own session; returns its pid (not yet ready).

    Persistence is append-only so a restarted server (a fault test stops and starts it)
    comes back with its artifacts and checkpoints.
    """
    server = require_tool("redis-server")
    data_dir.mkdir(parents=True, exist_ok=True)
    return spawn(
        [
            server,
            "--bind",
            host,
            "--port",
            str(port),
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--protected-mode",
            "no",
        ],
        log_path=data_dir / "redis.log",
    )


def answers(url: str) -> bool:
    """Whether a Redis server at ``url`` answers PING."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def wait_until_ready(pid: int, url: str, log: Path, *, timeout: float = 20.0) -> None:
    """Block until Redis answers PING; raise with its log's tail if it dies or hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            raise StackError(f"redis-server exited while starting; its log ends:\n{log_tail(log)}")
        if answers(url):
            return
        time.sleep(0.1)
    raise StackError(f"redis-server did not answer within {timeout:.0f}s:\n{log_tail(log)}")
