"""How durable a write to Redis must be before driftline counts it as saved (``[redis]``).

Redis acknowledges a write once it is in the primary's memory. A checkpoint or an artifact
acknowledged that way is lost with the primary's process (``appendfsync everysec`` loses up to a
second of writes), its machine, or a failover to a replica that had not received it yet. The
``[redis] durability`` setting says what a write must also reach before it counts:

- ``"none"``: nothing more (the default, and what driftline always did);
- ``"replica"``: at least one replica acknowledged it (``WAIT 1 timeout``);
- ``"aof"``: the primary fsynced it to its append-only file (``WAITAOF 1 0 timeout``, Redis 7.2
  or newer).

A write that is not as durable as asked within :data:`WAIT_TIMEOUT_SECONDS` raises
:class:`DurabilityNotMet`, a ``redis.RedisError``: whoever retries a Redis that is away retries
it too, and a checkpoint that waits so is not counted as saved (its events stay unacknowledged).

``WAIT`` and ``WAITAOF`` cover the writes of the connection they are sent on, so a write and its
wait go through one pipeline (one connection), never through two calls of a pooled client.

:func:`check_server` is what a worker checks before it starts: a Redis that may evict keys is
refused, as is one that cannot wait as ``durability`` asks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import redis
import redis.asyncio as aioredis

from streams.settings import SettingsError

__all__ = [
    "DURABILITY_LEVELS",
    "NO_WAIT",
    "WAIT_TIMEOUT_SECONDS",
    "Durability",
    "DurabilityLevel",
    "DurabilityNotMet",
    "RedisRefused",
    "check_server",
]

DurabilityLevel = Literal["none", "replica", "aof"]
DURABILITY_LEVELS: tuple[str, ...] = get_args(DurabilityLevel)

WAIT_TIMEOUT_SECONDS = 2.0
"""How long a write waits for its replica or fsync: twice ``appendfsync everysec``'s period, and
well under the workers' 5 s socket timeout (which would otherwise fail the wait as a lost
connection). A wait that times out is retried with the write, with the workers' backoff."""


class DurabilityNotMet(redis.RedisError):
    """Redis applied a write but did not make it as durable as ``[redis] durability`` asks in
    time: the write does not count as saved."""


class RedisRefused(SettingsError):
    """The Redis a worker would run on may lose what it acknowledged, or cannot wait as asked."""


@dataclass(frozen=True)
class Durability:
    """A ``[redis] durability`` level and how long a write waits for it.

    >>> Durability("aof").waits, Durability().waits
    (True, False)
    """

    level: DurabilityLevel = "none"
    timeout: float = WAIT_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if self.level not in DURABILITY_LEVELS:
            raise ValueError(f"durability is one of {list(DURABILITY_LEVELS)}, not {self.level!r}")

    @property
    def waits(self) -> bool:
        """Whether a write waits for more than the primary's memory."""
        return self.level != "none"

    async def write(
        self,
        client: aioredis.Redis,
        command: Callable[[aioredis.Redis], Awaitable[Any]],
        *,
        what: str,
    ) -> Any:
        """Send the one write ``command`` issues on the client it is given; return its reply
        once it is as durable as this level asks.

        ``command`` must write something that replicates (a ``SET`` that changes nothing is not
        replicated, and the wait would then not cover it). ``what`` names the write in the error.
        Raises :class:`DurabilityNotMet` when the wait times out, and Redis's own errors.
        """
        if not self.waits:
            return await command(client)
        milliseconds = max(1, round(self.timeout * 1000))
        async with client.pipeline(transaction=False) as pipe:
            await command(pipe)
            if self.level == "replica":
                pipe.wait(1, milliseconds)
            else:
                pipe.waitaof(1, 0, milliseconds)
            reply, waited = await pipe.execute()
        if self.level == "replica" and int(waited) < 1:
            raise DurabilityNotMet(f"{what}: no replica acknowledged it within {self.timeout:g} s")
        if self.level == "aof" and int(waited[0]) < 1:
            raise DurabilityNotMet(
                f"{what}: not fsynced to the append-only file within {self.timeout:g} s"
            )
        return reply


NO_WAIT = Durability()
"""Today's behaviour: a write counts once the primary acknowledged it."""


def check_server(client: redis.Redis, durability: Durability) -> list[str]:
    """Check the Redis ``client`` talks to before a worker starts; returns warnings to log.

    Raises :class:`RedisRefused` (one line, naming the setting and the fix) when its
    ``maxmemory-policy`` is not ``noeviction``, or when it cannot wait as ``durability`` asks:
    ``WAITAOF`` needs Redis 7.2 and ``appendonly yes``.

    Any policy but ``noeviction`` is refused whether ``maxmemory`` is set or not: ``CONFIG SET
    maxmemory`` (or a managed service's default) starts evicting at once, without a restart
    that would check again, and even the ``volatile-*`` policies evict the scorer's join entries
    (they carry a TTL). ``noeviction`` costs nothing while memory lasts, and a full Redis then
    refuses writes, which workers retry, instead of dropping what they saved.

    A Redis that does not let this user read its configuration (an ACL without ``CONFIG``, a
    managed service that renames it), or does not answer, gives a warning instead: workers run
    through a Redis outage, and its policy may well be right.
    """
    warnings: list[str] = []
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except (redis.ConnectionError, redis.TimeoutError) as error:
        return [
            f"Redis did not answer ({error}): its maxmemory-policy and durability are unchecked"
        ]
    except redis.ResponseError as error:  # NoPermissionError, or CONFIG renamed away
        warnings.append(
            f"cannot read Redis's maxmemory-policy ({error}): make sure it is noeviction, or "
            "Redis may evict checkpoints and artifacts when its memory fills"
        )
    else:
        if policy != "noeviction":
            raise RedisRefused(
                f"Redis's maxmemory-policy is {policy!r}, which evicts keys (checkpoints, "
                "artifacts, join state) when memory fills: run CONFIG SET maxmemory-policy "
                "noeviction (and set it in redis.conf)"
            )
    if durability.level == "aof":
        _check_waitaof(client)
    elif durability.level == "replica" and int(client.wait(0, 0)) == 0:
        # WAIT 0 0 answers at once with the replicas connected (none wrote for this client).
        warnings.append(
            "[redis] durability = 'replica' and the primary has no replica connected: every "
            "checkpoint and artifact waits (and is retried) until one is"
        )
    return warnings


def _check_waitaof(client: redis.Redis) -> None:
    # This connection wrote nothing, so WAITAOF answers at once where it works at all.
    try:
        client.waitaof(1, 0, 1000)
    except redis.ResponseError as error:
        message = str(error)
        if "unknown command" in message.lower():
            try:
                version = client.info("server")["redis_version"]
            except (redis.ResponseError, KeyError):
                version = "older (INFO is not allowed to say which)"
            raise RedisRefused(
                f"[redis] durability = 'aof' needs WAITAOF (Redis 7.2 or newer), and this Redis "
                f"is {version}: upgrade it, or choose 'replica' or 'none'"
            ) from None
        if "appendonly" in message.lower():
            raise RedisRefused(
                "[redis] durability = 'aof' needs the append-only file on: run CONFIG SET "
                "appendonly yes (and set it in redis.conf)"
            ) from None
        raise RedisRefused(
            f"[redis] durability = 'aof': Redis refuses WAITAOF: {message}"
        ) from None
