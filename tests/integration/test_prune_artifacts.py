"""``driftline registry prune-artifacts`` removes exactly the artifacts retention lets go."""

from __future__ import annotations

import pytest
import redis
from registry_helpers import publish_hand_made_version, publish_records

from streams.registry.artifacts import Artifact
from streams.registry.records import ModelVersion, RecordKind, manual_record

pytestmark = pytest.mark.timeout(120)


def test_prune_removes_old_artifacts_and_keeps_what_serves_or_may_serve_again(
    driftline_env, driftline_cli
):
    key, prefix = (
        driftline_env["DRIFTLINE_SIGNING_KEY"].encode(),
        driftline_env["DRIFTLINE_REDIS_PREFIX"],
    )
    client = redis.Redis.from_url(driftline_env["REDIS_URL"])

    def stored(version: int) -> Artifact:
        artifact = Artifact.pack(
            {"v": version}, model="sea", version=version, prefix=prefix, key=key
        )
        client.set(artifact.ref.key, artifact.blob)
        return artifact

    artifacts = {version: stored(version) for version in range(1, 7)}
    first = ModelVersion(
        "sea", 1, RecordKind.INITIAL, {"name": "steady"}, None, "first", {}, {}, artifacts[1].ref
    ).signed(key)
    publish_records(driftline_env, first)
    records = [first]
    for version in range(2, 7):
        if version == 4:  # an operator went back to v2 once
            rollback = manual_record(
                records[1], kind=RecordKind.ROLLBACK, previous_version=3, reason="t", operator="bob"
            ).signed(key)
            publish_records(driftline_env, rollback)
        records.append(
            publish_hand_made_version(
                driftline_env,
                records[-1],
                version=version,
                artifact=artifacts[version].ref,
                reason="t",
            )
        )

    try:
        prune = ("registry", "prune-artifacts", "sea", "--keep", "1")
        dry = driftline_cli(*prune, "--dry-run", env=driftline_env, timeout=60)
        assert dry.returncode == 0, dry.stderr
        assert [line.split(":")[0] for line in dry.stdout.splitlines()] == [
            "sea v4", "sea v3", "sea v1", "sea"
        ]  # fmt: skip
        assert "would remove" in dry.stdout and all(
            client.exists(a.ref.key) for a in artifacts.values()
        )

        pruned = driftline_cli(*prune, env=driftline_env, timeout=60)
        assert pruned.returncode == 0, pruned.stderr
        assert (
            "sea: kept v6 (serves), v5 (a rollback goes back to it), "
            "v2 (target of a rollback record)" in pruned.stdout
        )
        assert "3 artifact(s) removed, beyond the 1 newest" in pruned.stderr
        present = {version for version, a in artifacts.items() if client.exists(a.ref.key)}
        assert present == {2, 5, 6}
    finally:
        client.delete(*(a.ref.key for a in artifacts.values()))
        client.close()
