"""[redis] durability against real redis-servers: a write waits for a replica, a worker refuses a
Redis that evicts keys (or cannot wait as asked), and warns when it cannot tell."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from pipeline import wait_for

from streams.durability import Durability, DurabilityNotMet, RedisRefused, check_server
from streams.registry.artifacts import Artifact, store
from streams.stack import redis_server
from streams.stack.process import free_port, stop_all
from streams.workers.checkpoint import RedisCheckpointStore, read_checkpoint

pytestmark = pytest.mark.timeout(120)
KEY = b"test-signing-key"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Start a redis-server of this test's own, as the local stack runs it; returns its URL.

    Its own, because these tests change its configuration and make it a primary.
    """
    pids: list[int] = []

    def start(name: str) -> str:
        port = free_port()
        pid = redis_server.start(tmp_path / name, host="127.0.0.1", port=port)
        pids.append(pid)
        url = f"redis://127.0.0.1:{port}/0"
        redis_server.wait_until_ready(pid, url, tmp_path / name / "redis.log")
        return url

    yield start
    stop_all(pids)


def _version(client: redis.Redis) -> tuple[int, ...]:
    return tuple(int(part) for part in client.info("server")["redis_version"].split(".")[:2])


def test_a_worker_refuses_a_redis_that_evicts_keys_and_warns_when_it_cannot_tell(
    own_redis, driftline_env, driftline_cli
):
    url = own_redis("primary")
    client = redis.Redis.from_url(url)
    assert check_server(client, Durability()) == [], "the local stack's Redis passes"

    client.config_set("maxmemory-policy", "volatile-lru")  # evicts the join's entries (a TTL)
    with pytest.raises(RedisRefused, match="CONFIG SET maxmemory-policy noeviction"):
        check_server(client, Durability())
    worker = driftline_cli(
        "worker", "--config", "examples/sea.toml", env={**driftline_env, "REDIS_URL": url}
    )
    assert worker.returncode == 2
    assert worker.stderr.count("\n") == 1, worker.stderr
    assert "maxmemory-policy is 'volatile-lru'" in worker.stderr

    # A user who may not read the configuration: a warning, not a refusal.
    client.acl_setuser(
        "app", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-config"]
    )
    limited = redis.Redis.from_url(url, username="app", password="pw")
    (warning,) = check_server(limited, Durability())
    assert "cannot read Redis's maxmemory-policy" in warning

    client.config_set("maxmemory-policy", "noeviction")
    if _version(client) < (7, 2):
        with pytest.raises(RedisRefused, match=r"needs WAITAOF \(Redis 7.2 or newer\).*is 7\."):
            check_server(client, Durability("aof"))
    else:
        assert check_server(client, Durability("aof")) == []
    (warning,) = check_server(client, Durability("replica"))
    assert "no replica connected" in warning


def test_a_checkpoint_and_an_artifact_count_once_a_replica_has_them(own_redis):
    primary_url, replica_url = own_redis("primary"), own_redis("replica")
    durability = Durability("replica", timeout=0.2)
    artifact = Artifact.pack({"weights": [1, 2]}, model="sea", version=1, prefix="t:", key=KEY)

    async def save(what: str) -> None:
        client = aioredis.Redis.from_url(primary_url)
        checkpoints = RedisCheckpointStore(
            client, prefix="t:", group="g", key=KEY, durability=durability
        )
        try:
            if what == "checkpoint":
                claim = await checkpoints.claim("events", 0)
                await checkpoints.save(
                    "events", 0, epoch=claim.epoch, cursor=41, snapshots={"sea": b"s"}
                )
            else:
                await store(client, artifact, durability)
        finally:
            await client.aclose()

    # No replica: the primary holds them, but neither counts as saved.
    with pytest.raises(DurabilityNotMet, match=r"the checkpoint of events\[0\]: no replica"):
        asyncio.run(save("checkpoint"))
    with pytest.raises(DurabilityNotMet, match=r"the artifact t:artifact:\w+: no replica"):
        asyncio.run(save("artifact"))

    port = int(primary_url.rsplit(":", 1)[1].split("/")[0])
    replica = redis.Redis.from_url(replica_url)
    replica.replicaof("127.0.0.1", port)
    wait_for(
        lambda: replica.info("replication")["master_link_status"] == "up",
        timeout=20,
        what="the replica to follow the primary",
    )
    asyncio.run(save("checkpoint"))
    asyncio.run(save("artifact"))  # stored already: written again, so that the wait covers it
    cursor, snapshots = read_checkpoint(
        replica, prefix="t:", group="g", topic="events", partition=0
    )
    assert (cursor, snapshots) == (41, {"sea": b"s"})
    assert replica.get(artifact.ref.key) == artifact.blob
