"""Checkpoints of trainer state in Redis, one per partition of the labeled-events topic, fenced.

A model's events share one partition (the record key is the model name), so a partition is the
unit of ownership: the worker that owns it trains its models. Its checkpoint holds

- ``epoch``: incremented by every worker that claims the partition; a save carries the epoch its
  worker claimed and is refused once another worker has claimed since (:class:`CheckpointFenced`);
- ``cursor``: the offset of the last event fully handled (learned, or sent to the dead-letter
  topic): every event at or before it is in the saved state;
- ``models``: a snapshot (:meth:`trainers.trainer.ModelTrainer.snapshot`) per model.

Why this, and not Kafka's committed offsets alone: faust commits acknowledged offsets on its own
schedule and seeks back to them after every rebalance, so the committed offset and the model
state must be kept in step by the worker (see :class:`streams.workers.trainer.TrainingRuntime`):

1. **flush**: wait until every record the events produced (dead letters, registry versions) is
   acknowledged by the broker;
2. **persist**: save the partition's cursor and model snapshots in one atomic, fenced write;
3. **commit**: only now acknowledge the events to faust, which commits their offsets later.

So Kafka's committed offset never passes the saved cursor. After a crash, a restart or a
rebalance, the consumer resumes at or before the cursor, the owner restores the snapshots, and
skips the events at or before the cursor: every event is learned exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

# KEYS: epoch, cursor, models hash. ARGV: expected epoch, cursor, then model/snapshot pairs.
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


def checkpoint_namespace(prefix: str, group: str) -> str:
    return f"{prefix}checkpoint:{group}"


def checkpoint_keys(namespace: str, topic: str, partition: int) -> list[str]:
    """The epoch, cursor and models keys of one partition's checkpoint."""
    base = f"{namespace}:{topic}:{partition}"
    return [f"{base}:epoch", f"{base}:cursor", f"{base}:models"]


def read_checkpoint(
    client: redis.Redis, *, prefix: str, group: str, topic: str, partition: int
) -> tuple[int, dict[str, bytes]]:
    """A partition's saved cursor and model snapshots, for inspection (it claims nothing)."""
    _, cursor_key, models_key = checkpoint_keys(
        checkpoint_namespace(prefix, group), topic, partition
    )
    cursor = client.get(cursor_key)
    snapshots = {name.decode(): blob for name, blob in client.hgetall(models_key).items()}
    return (int(cursor) if cursor is not None else -1), snapshots


class CheckpointFenced(RuntimeError):
    """Another worker claimed the partition after this one: this worker's state is stale."""


@dataclass(frozen=True)
class Claim:
    """What a worker gets when it takes a partition over."""

    epoch: int
    cursor: int
    snapshots: dict[str, bytes]


class CheckpointStore:
    """Fenced, per-partition checkpoints of one consumer group.

    Parameters
    ----------
    client
        An asyncio Redis client.
    prefix
        Namespace of driftline's keys (``driftline:``).
    group
        The trainer workers' consumer group: groups never see each other's checkpoints.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str, group: str) -> None:
        self._client = client
        self._namespace = checkpoint_namespace(prefix, group)
        self._save = client.register_script(_SAVE_IF_OWNER)

    def _keys(self, topic: str, partition: int) -> list[str]:
        return checkpoint_keys(self._namespace, topic, partition)

    async def claim(self, topic: str, partition: int) -> Claim:
        """Take the partition over: fence out its previous owner, then read its checkpoint."""
        epoch_key, cursor_key, models_key = self._keys(topic, partition)
        epoch = await self._client.incr(epoch_key)
        cursor, snapshots = (
            await self._client.get(cursor_key),
            await self._client.hgetall(models_key),
        )
        return Claim(
            epoch=int(epoch),
            cursor=int(cursor) if cursor is not None else -1,
            snapshots={name.decode(): blob for name, blob in snapshots.items()},
        )

    async def save(
        self, topic: str, partition: int, *, epoch: int, cursor: int, snapshots: dict[str, bytes]
    ) -> None:
        """Write the cursor and snapshots atomically, unless another worker claimed since."""
        args: list[object] = [epoch, cursor]
        for model, blob in snapshots.items():
            args += [model, blob]
        if not await self._save(keys=self._keys(topic, partition), args=args):
            raise CheckpointFenced(f"{topic}[{partition}] was claimed by another worker")
