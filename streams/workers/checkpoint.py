"""Fenced, signed checkpoints of trainer state in Redis, one per partition of the labeled topic.

A model's events share one partition (the record key is the model name), so a partition is the
unit of ownership: the worker that owns it trains its models. Its checkpoint is three keys:

- ``epoch``: incremented by every worker that claims the partition; a save carries the epoch its
  worker claimed and is refused once another worker has claimed since (:class:`CheckpointFenced`);
- ``manifest``: JSON ``{"epoch", "cursor", "models": {name: sha256}, "sources": {name: seq},
  "dead_letters": offset}`` and its HMAC-SHA256
  signature: ``cursor`` is the offset of the last event fully handled (every event at or before
  it is in the saved state), ``models`` the digest of each model's snapshot, ``dead_letters`` the
  offset of the dead-letter topic from which dead letters of events after the cursor may be
  (:mod:`streams.workers.deadletters`; absent from checkpoints saved before it existed, and from
  the scorer's);
- ``models``: a hash of model name to snapshot bytes
  (:meth:`trainers.trainer.ModelTrainer.snapshot`, a pickle).

Snapshots are pickles, so whoever could write them could run code in the trainer. They are
therefore unpickled only when the manifest's signature checks out under the deployment's signing
key, bound to (scheme, group, topic, partition, epoch, cursor, digests), and each snapshot's bytes
match the digest the manifest names. Anything else raises :class:`CheckpointRefused`: the
partition then waits for an operator instead of silently starting from scratch.

Claim and save are each one Lua script, so a claim reads the epoch, the manifest and the
snapshots of one moment, and a save writes all of them or nothing. A save waits for the
``[redis] durability`` it is given (:mod:`streams.durability`), and one that is not as durable
as asked in time raises :class:`~streams.durability.DurabilityNotMet`: not saved. The protocol
that uses these checkpoints is in :mod:`streams.workers.ledger`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import redis
import redis.asyncio as aioredis

from streams.durability import NO_WAIT, Durability

__all__ = [
    "CHECKPOINT_SCHEME",
    "CheckpointFenced",
    "CheckpointRefused",
    "Claim",
    "PartitionCheckpoints",
    "RedisCheckpointStore",
    "read_checkpoint",
    "snapshot_digest",
]

CHECKPOINT_SCHEME = "driftline-checkpoint/1"
"""Names the signed message's format, so that a future format can never verify against this one."""

# KEYS: epoch, manifest, models hash. Returns the new epoch, the manifest and the snapshots.
_CLAIM = """
local epoch = redis.call('INCR', KEYS[1])
return {epoch, redis.call('GET', KEYS[2]) or false, redis.call('HGETALL', KEYS[3])}
"""

# KEYS: epoch, manifest, models hash. ARGV: expected epoch, manifest, then model/snapshot pairs.
_SAVE_IF_OWNER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
return 1
"""


class CheckpointFenced(RuntimeError):
    """Another worker claimed the partition after this one: this worker's state is stale."""


class CheckpointRefused(RuntimeError):
    """A saved checkpoint does not verify: altered, unsigned, or signed with another key."""


@dataclass(frozen=True)
class Claim:
    """What a worker gets when it takes a partition over (its snapshots verified)."""

    epoch: int
    cursor: int
    snapshots: dict[str, bytes]
    sources: dict[str, int] = field(default_factory=dict)
    """The last join ``seq`` learned per scorer partition (see :mod:`streams.workers.join`)."""
    dead_letters: int | None = None
    """The dead-letter mark; None when the checkpoint has none (new, or saved without one)."""

    @property
    def digests(self) -> dict[str, str]:
        """The sha256 of each snapshot, as the next save's manifest repeats them."""
        return {model: snapshot_digest(blob) for model, blob in self.snapshots.items()}


class PartitionCheckpoints(Protocol):
    """Where a ledger claims partitions and saves their checkpoints (Redis, or a test's fake)."""

    async def claim(self, topic: str, partition: int) -> Claim: ...

    async def save(
        self,
        topic: str,
        partition: int,
        *,
        epoch: int,
        cursor: int,
        snapshots: dict[str, bytes],
        digests: Mapping[str, str] | None = None,
        sources: Mapping[str, int] | None = None,
        dead_letters: int | None = None,
    ) -> dict[str, str]: ...

    async def own(self, topic: str, model: str, partition: int) -> int: ...


def snapshot_digest(blob: bytes) -> str:
    """Hex sha256 of a snapshot, as manifests name it."""
    return hashlib.sha256(blob).hexdigest()


def _signed_message(group: str, topic: str, partition: int, manifest: Mapping[str, Any]) -> bytes:
    identity = [CHECKPOINT_SCHEME, group, topic, partition, manifest]
    return json.dumps(identity, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


def _sign(key: bytes, group: str, topic: str, partition: int, manifest: Mapping[str, Any]) -> str:
    message = _signed_message(group, topic, partition, manifest)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def checkpoint_namespace(prefix: str, group: str) -> str:
    return f"{prefix}checkpoint:{group}"


def checkpoint_keys(namespace: str, topic: str, partition: int) -> list[str]:
    """The epoch, manifest and models keys of one partition's checkpoint."""
    base = f"{namespace}:{topic}:{partition}"
    return [f"{base}:epoch", f"{base}:manifest", f"{base}:models"]


class RedisCheckpointStore:
    """Fenced, signed, per-partition checkpoints of one consumer group in Redis.

    Parameters
    ----------
    client
        An asyncio Redis client.
    prefix
        Namespace of driftline's keys (``driftline:``).
    group
        The trainer workers' consumer group: groups never see each other's checkpoints.
    key
        The deployment's signing key (the one that signs artifacts).
    durability
        What a save must reach before it returns (``[redis] durability``).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        group: str,
        key: bytes,
        durability: Durability = NO_WAIT,
    ) -> None:
        if not key:
            raise ValueError("an empty key cannot sign checkpoints")
        self._group = group
        self._durability = durability
        self._key = key
        self._client = client
        self._namespace = checkpoint_namespace(prefix, group)
        self._claim = client.register_script(_CLAIM)
        self._save = client.register_script(_SAVE_IF_OWNER)

    def _keys(self, topic: str, partition: int) -> list[str]:
        return checkpoint_keys(self._namespace, topic, partition)

    async def claim(self, topic: str, partition: int) -> Claim:
        """Take the partition over: fence out its previous owner and read its checkpoint.

        Raises :class:`CheckpointRefused` when the saved checkpoint does not verify.
        """
        epoch, raw_manifest, flat = await self._claim(keys=self._keys(topic, partition))
        snapshots = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
        if not raw_manifest:
            if snapshots:
                raise CheckpointRefused(
                    f"{topic}[{partition}] has model snapshots but no signed manifest"
                )
            return Claim(epoch=int(epoch), cursor=-1, snapshots={})
        manifest = self._verified_manifest(topic, partition, raw_manifest)
        digests: dict[str, str] = manifest["models"]
        if set(digests) != set(snapshots):
            raise CheckpointRefused(
                f"{topic}[{partition}]: the manifest names models {sorted(digests)}, "
                f"Redis holds {sorted(snapshots)}"
            )
        for model, blob in snapshots.items():
            if not hmac.compare_digest(snapshot_digest(blob), digests[model]):
                raise CheckpointRefused(
                    f"{topic}[{partition}]: the snapshot of {model!r} differs from the signed one"
                )
        mark = manifest.get("dead_letters")
        return Claim(
            epoch=int(epoch),
            cursor=int(manifest["cursor"]),
            snapshots=snapshots,
            sources={source: int(seq) for source, seq in manifest.get("sources", {}).items()},
            dead_letters=None if mark is None else int(mark),
        )

    def _verified_manifest(self, topic: str, partition: int, raw: bytes) -> dict[str, Any]:
        try:
            envelope = json.loads(raw)
            manifest, signature = envelope["manifest"], str(envelope["signature"])
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointRefused(
                f"{topic}[{partition}]: unreadable manifest ({error})"
            ) from None
        expected = _sign(self._key, self._group, topic, partition, manifest)
        if not hmac.compare_digest(expected, signature):
            raise CheckpointRefused(
                f"{topic}[{partition}]: checkpoint not signed with this worker's key "
                f"(group {self._group!r}); check DRIFTLINE_SIGNING_KEY"
            )
        return dict(manifest)

    async def save(
        self,
        topic: str,
        partition: int,
        *,
        epoch: int,
        cursor: int,
        snapshots: dict[str, bytes],
        digests: Mapping[str, str] | None = None,
        sources: Mapping[str, int] | None = None,
        dead_letters: int | None = None,
    ) -> dict[str, str]:
        """Write the signed manifest and ``snapshots`` atomically, unless fenced.

        ``digests`` are those of the partition's snapshots saved earlier and not rewritten now
        (models that learned nothing since): the manifest covers every model of the partition.
        ``dead_letters`` is the dead-letter mark (None: the manifest names none).
        Returns the manifest's digests, every model's. Raises
        :class:`~streams.durability.DurabilityNotMet` when the save is not as durable as asked.
        """
        models = {**(digests or {}), **{m: snapshot_digest(blob) for m, blob in snapshots.items()}}
        manifest: dict[str, Any] = {
            "epoch": epoch,
            "cursor": cursor,
            "models": models,
            "sources": dict(sources or {}),
        }
        if dead_letters is not None:
            manifest["dead_letters"] = dead_letters
        envelope = {
            "manifest": manifest,
            "signature": _sign(self._key, self._group, topic, partition, manifest),
        }
        args: list[bytes | str | int] = [epoch, json.dumps(envelope, sort_keys=True)]
        for model, blob in snapshots.items():
            args += [model, blob]
        saved = await self._durability.write(
            self._client,
            lambda client: self._save(keys=self._keys(topic, partition), args=args, client=client),
            what=f"the checkpoint of {topic}[{partition}]",
        )
        if not saved:
            raise CheckpointFenced(f"{topic}[{partition}] was claimed by another worker")
        return models

    async def own(self, topic: str, model: str, partition: int) -> int:
        """The partition of ``topic`` that owns ``model``: the first that asked, for good.

        A model's state lives in one partition's checkpoint; a second trainer of the same model
        on another partition would issue colliding versions, so its events are refused there.
        """
        key = f"{self._namespace}:{topic}:owners"
        await self._client.hsetnx(key, model, partition)
        owner = cast(bytes, await self._client.hget(key, model))
        return int(owner)


def read_checkpoint(
    client: redis.Redis, *, prefix: str, group: str, topic: str, partition: int
) -> tuple[int, dict[str, bytes]]:
    """A partition's saved cursor and snapshots, for inspection (claims and verifies nothing)."""
    _, manifest_key, models_key = checkpoint_keys(
        checkpoint_namespace(prefix, group), topic, partition
    )
    raw = client.get(manifest_key)
    cursor = json.loads(raw)["manifest"]["cursor"] if raw else -1
    entries = cast(dict[bytes, bytes], client.hgetall(models_key))
    snapshots = {name.decode(): blob for name, blob in entries.items()}
    return int(cursor), snapshots
