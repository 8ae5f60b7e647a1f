"""A redis-server (Debian's package) on loopback for the local stack."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streams.stack.process import require_tool, spawn, wait_until_answering


@dataclass(frozen=True)
class RedisSecurity:
    """TLS and ACL users for a secured redis-server (:mod:`streams.stack.security`)."""

    certificate: Path
    key: Path
    ca_certificate: Path
    acl_lines: list[str]
    """``user`` directives (they hold passwords: written to a file only its owner reads)."""


def start(
    data_dir: Path,
    *,
    host: str,
    port: int,
    password: str | None = None,
    security: RedisSecurity | None = None,
) -> int:
    """Start redis-server in its own session; returns its pid (not yet ready).

    Persistence is append-only, fsynced every second, so a restarted server (a fault test
    stops and starts it) comes back with its artifacts and checkpoints; it never evicts a key
    (``noeviction``: a worker refuses a Redis that would, see :mod:`streams.durability`).
    With ``password``, clients must authenticate (``redis://:PASSWORD@host:port/0``); with
    ``security``, ``port`` takes TLS connections only (``rediss://USER:PASSWORD@host:port/0``)
    from the ACL users it names.
    Secrets go to the server in a file only its owner can read, never on the command line,
    where any user could see them.
    """
    server = require_tool("redis-server")
    data_dir.mkdir(parents=True, exist_ok=True)
    secret_lines = [] if password is None else [f"requirepass {_quoted(password)}"]
    listener = ["--port", str(port)]
    if security is not None:
        secret_lines += security.acl_lines
        listener = [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", str(security.certificate),
            "--tls-key-file", str(security.key),
            "--tls-ca-cert-file", str(security.ca_certificate),
            # Clients prove who they are with their ACL user's password, not a certificate.
            "--tls-auth-clients", "no",
        ]  # fmt: skip
    config = [_private_config(data_dir, secret_lines)] if secret_lines else []
    return spawn(
        [
            server,
            *config,
            "--bind",
            host,
            *listener,
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
            "--protected-mode",
            "no",
        ],
        log_path=data_dir / "redis.log",
    )


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _private_config(data_dir: Path, lines: list[str]) -> str:
    path = data_dir / "secrets.conf"
    path.touch(mode=0o600)
    path.chmod(0o600)  # touch keeps the mode of a file that already existed
    path.write_text("".join(f"{line}\n" for line in lines))
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
