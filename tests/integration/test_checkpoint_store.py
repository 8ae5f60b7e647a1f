"""The Redis checkpoint store against a real redis-server: fencing, signatures, ownership."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from streams.workers.checkpoint import (
    CheckpointFenced,
    CheckpointRefused,
    RedisCheckpointStore,
    checkpoint_keys,
    checkpoint_namespace,
)

KEY = b"checkpoint test key"
TOPIC = "labeled"


def _run(redis_url, prefix, scenario, *, key=KEY, group="g"):
    async def main():
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await scenario(RedisCheckpointStore(client, prefix=prefix, group=group, key=key))
        finally:
            await client.aclose()

    return asyncio.run(main())


async def _saved(store):
    claim = await store.claim(TOPIC, 0)
    await store.save(TOPIC, 0, epoch=claim.epoch, cursor=5, snapshots={"a": b"model"})


def _keys(prefix, partition=0, group="g"):
    return checkpoint_keys(checkpoint_namespace(prefix, group), TOPIC, partition)


def test_claim_save_and_claim_again(redis_url, redis_client):
    prefix = redis_client.test_prefix

    async def scenario(store):
        first = await store.claim(TOPIC, 0)
        assert (first.epoch, first.cursor, first.snapshots) == (1, -1, {})
        digests = await store.save(TOPIC, 0, epoch=1, cursor=9, snapshots={"a": b"A", "b": b"B"})
        await store.save(TOPIC, 0, epoch=1, cursor=19, snapshots={"a": b"A2"}, digests=digests)
        again = await store.claim(TOPIC, 0)
        assert (again.epoch, again.cursor, again.snapshots) == (2, 19, {"a": b"A2", "b": b"B"})
        with pytest.raises(CheckpointFenced):
            await store.save(TOPIC, 0, epoch=1, cursor=29, snapshots={"a": b"stale"})

    _run(redis_url, prefix, scenario)


@pytest.mark.parametrize("tampering", ["snapshot", "manifest", "unsigned", "other_partition"])
def test_a_tampered_checkpoint_is_refused(redis_url, redis_client, tampering):
    prefix = redis_client.test_prefix
    _run(redis_url, prefix, _saved)
    epoch_key, manifest_key, models_key = _keys(prefix)
    if tampering == "snapshot":
        redis_client.hset(models_key, "a", b"cos\nsystem\n(S'echo pwned'\ntR.")
    elif tampering == "manifest":
        envelope = json.loads(redis_client.get(manifest_key))
        envelope["manifest"]["cursor"] = 500  # would skip 495 events
        redis_client.set(manifest_key, json.dumps(envelope))
    elif tampering == "unsigned":
        redis_client.delete(manifest_key)
    else:  # a valid checkpoint of partition 0, copied to partition 1
        for source, target in zip(_keys(prefix), _keys(prefix, partition=1), strict=True):
            redis_client.copy(source, target)
    partition = 1 if tampering == "other_partition" else 0

    async def claim(store):
        with pytest.raises(CheckpointRefused):
            await store.claim(TOPIC, partition)

    _run(redis_url, prefix, claim)
    assert redis_client.exists(epoch_key)


def test_a_checkpoint_signed_with_another_key_is_refused(redis_url, redis_client):
    prefix = redis_client.test_prefix
    _run(redis_url, prefix, _saved)

    async def claim(store):
        with pytest.raises(CheckpointRefused, match="DRIFTLINE_SIGNING_KEY"):
            await store.claim(TOPIC, 0)

    _run(redis_url, prefix, claim, key=b"another key")


def test_the_first_partition_to_ask_owns_a_model(redis_url, redis_client):
    async def scenario(store):
        return [await store.own(TOPIC, "sea", p) for p in (3, 0, 3)]

    assert _run(redis_url, redis_client.test_prefix, scenario) == [3, 3, 3]
