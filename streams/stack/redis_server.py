"""A redis-server (Debian's package) on loopback for the local stack."""

from __future__ import annotations

from pathlib import Path

from streams.stack.process import require_tool, spawn, wait_until_answering


def start(data_dir: Path, *, host: str, port: int, password: str | None = None) -> int:
    """Start redis-server in its own session; returns its pid (not yet ready).

    Persistence is append-only so a restarted server (a fault test stops and starts it)
    comes back with its artifacts and checkpoints. With ``password``, clients must
    authenticate (``redis://:PASSWORD@host:port/0``); it goes to the server in a file only its
    owner can read, never on the command line, where any user could see it.
    """
    server = require_tool("redis-server")
    data_dir.mkdir(parents=True, exist_ok=True)
    config = [_password_file(data_dir, password)] if password is not None else []
    return spawn(
        [
            server,
            *config,
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


def _password_file(data_dir: Path, password: str) -> str:
    path = data_dir / "requirepass.conf"
    path.touch(mode=0o600)
    path.chmod(0o600)  # touch keeps the mode of a file that already existed
    quoted = password.replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(f'requirepass "{quoted}"\n')
    return str(path)


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
    wait_until_answering(
        pid, lambda: answers(url), name="redis-server", log=log, timeout=timeout, every=0.1
    )
