"""Which driftline workers still use a local stack, so that ``stack down`` can name them.

A worker whose broker goes away does not exit: it retries until stopped. Stopping the stack under
it is allowed (the user may mean it), but the user should know which processes will then retry,
by pid. A worker is a ``driftline worker`` or ``driftline score`` process, however started (the
console script, or ``python -m streams.cli.main`` as the demo and the tests start it), whose
environment or command line names one of the stack's addresses.

Only ``/proc`` is read: Linux, and processes whose environment this user may read (all of them as
root, one's own otherwise); a process that cannot be read is left out, never guessed at.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WORKER_COMMANDS", "StackClient", "find_clients", "mentions_address", "worker_command"]

#: The driftline subcommands that run as long-lived clients of Kafka and Redis.
WORKER_COMMANDS = frozenset({"worker", "score"})

_PROGRAMS = ("driftline", "streams.cli.main")


@dataclass(frozen=True)
class StackClient:
    """A driftline worker process that uses the stack."""

    pid: int
    command: str
    """``worker`` or ``score``."""

    def __str__(self) -> str:
        return f"driftline {self.command} (pid {self.pid})"


def worker_command(argv: Sequence[str]) -> str | None:
    """The subcommand if ``argv`` runs a driftline worker (``worker`` or ``score``), else None.

    >>> worker_command(["/usr/bin/python3", "/repo/.venv/bin/driftline", "worker", "--config", "x"])
    'worker'
    >>> worker_command(["python", "-m", "streams.cli.main", "score"])
    'score'
    >>> worker_command(["driftline", "produce", "--events", "10"]) is None
    True
    """
    for index, arg in enumerate(argv):
        if arg.endswith(_PROGRAMS):
            # The first word after the program that is not an option is the subcommand.
            following = [word for word in argv[index + 1 :] if not word.startswith("-")]
            if following and following[0] in WORKER_COMMANDS:
                return following[0]
            return None
    return None


def mentions_address(texts: Iterable[str], addresses: Iterable[str]) -> bool:
    """Whether any of ``texts`` (environment entries, arguments) names one of ``addresses``.

    An address is ``host:port``; ``localhost`` stands for the loopback address it resolves to.

    >>> mentions_address(["REDIS_URL=redis://localhost:6390/0"], ["127.0.0.1:6390"])
    True
    >>> mentions_address(["KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:190921"], ["127.0.0.1:19092"])
    False
    """
    needles: set[str] = set()
    for address in addresses:
        host, _, port = address.rpartition(":")
        hosts = {host, "localhost"} if host in ("127.0.0.1", "localhost") else {host}
        needles.update(f"{name}:{port}" for name in hosts)
    for text in texts:
        for needle in needles:
            start = text.find(needle)
            while start >= 0:
                end = start + len(needle)
                # A longer port that starts with the same digits is another address.
                if end == len(text) or not text[end].isdigit():
                    return True
                start = text.find(needle, start + 1)
    return False


def _read_words(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8", "replace").split("\0")


def find_clients(addresses: Sequence[str], *, proc: Path = Path("/proc")) -> list[StackClient]:
    """Driftline workers (other than this process) that use one of ``addresses``, by pid."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = _read_words(entry / "cmdline")
            command = worker_command(argv)
            if command is None:
                continue
            if mentions_address([*argv, *_read_words(entry / "environ")], addresses):
                found.append(StackClient(int(entry.name), command))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return sorted(found, key=lambda client: client.pid)
