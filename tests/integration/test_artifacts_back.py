"""Artifacts come back after Redis lost them: ``driftline registry restore-artifacts`` rebuilds
them from their lineage, and a scoring worker serves a version once its artifact is back.

One trainer publishes sea v1 and v2 for the module (the SEA story); each test then deletes
artifact keys from Redis as a lost Redis would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from registry_helpers import Scoring, train_sea

from streams.registry.client import RegistryClient
from streams.registry.records import ModelVersion
from trainers.serialization import sha256_hex

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class Deployment:
    """The module's deployment: its environment, a registry client, Redis, sea's versions."""

    env: dict
    client: RegistryClient
    redis: redis.Redis
    versions: dict[int, ModelVersion]


@pytest.fixture(scope="module")
def deployment(module_driftline_env: dict, module_spawn: Callable) -> Iterator[Deployment]:
    client = train_sea(module_driftline_env, module_spawn, versions=2)
    versions = {v: client.get("sea", v) for v in (1, 2)}
    store = redis.Redis.from_url(module_driftline_env["REDIS_URL"])
    try:
        yield Deployment(module_driftline_env, client, store, versions)
    finally:
        store.close()


def restore(deployment: Deployment, driftline_cli: Callable) -> list[str]:
    """Run ``driftline registry restore-artifacts sea``; its lines (it must exit 0)."""
    done = driftline_cli("registry", "restore-artifacts", "sea", env=deployment.env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def test_restore_artifacts_rebuilds_deleted_artifacts_with_their_sha256(
    deployment: Deployment, driftline_cli: Callable
) -> None:
    v1, v2 = deployment.versions[1], deployment.versions[2]
    deployment.redis.delete(v1.artifact.key, v2.artifact.key)

    lines = restore(deployment, driftline_cli)
    assert [line.split(",")[0] for line in lines] == ["sea v1: restored", "sea v2: restored"]
    for record in (v1, v2):
        blob = deployment.redis.get(record.artifact.key)
        assert isinstance(blob, bytes) and sha256_hex(blob) == record.artifact.sha256
        assert deployment.client.load(record).name == record.candidate["name"]
    assert restore(deployment, driftline_cli) == [
        f"sea v{record.version}: present, sha256 {record.artifact.sha256}" for record in (v1, v2)
    ]
    verified = driftline_cli("registry", "verify", "sea", "2", env=deployment.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"sea v2: match, sha256 {v2.artifact.sha256}" in verified.stdout


def test_a_scorer_serves_a_version_once_its_artifact_is_restored(
    deployment: Deployment, module_spawn: Callable
) -> None:
    v2 = deployment.versions[2]
    blob = deployment.redis.get(v2.artifact.key)
    assert isinstance(blob, bytes)
    deployment.redis.delete(v2.artifact.key)
    process = module_spawn("score", "--config", "examples/sea.toml", name="scorer")
    log = Path(process.log_path)
    scoring = Scoring(deployment.env)
    try:
        scoring.until_served_by(1, timeout=60)
        # A few seconds of retries, so that the wait between two has grown past the first.
        time.sleep(3)
        assert {p["version"] for p in scoring.predictions.read()} == {1}

        # Restored as restore-artifacts stores it (the test above runs the command).
        deployment.redis.set(v2.artifact.key, blob, nx=True)
        restored = time.monotonic()
        scoring.until_served_by(2, timeout=20)
        print(f"v2 served {time.monotonic() - restored:.1f} s after its artifact was restored")
        assert process.poll() is None, "the scorer stopped"
    finally:
        scoring.close()
    text = log.read_text()
    assert text.count("refusing sea v2 (") == 1, "logged once, not at every retry"
    assert "until its artifact is back: missing" in text
    assert "sea v2: its artifact is back in Redis" in text
