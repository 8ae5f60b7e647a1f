"""An operator's trials on the real broker: ``promote --canary``, ``rollout``, and a shadow
stopped by ``rollback``, each a signed record every reader sees."""

from __future__ import annotations

import subprocess

from registry_helpers import client_for, publish_records

from streams.admin import ensure_topics
from streams.registry.records import ArtifactRef, ModelVersion, RecordKind
from streams.topics import Topics


def trainer_record(env: dict, version: int) -> ModelVersion:
    return ModelVersion(
        model="sea",
        version=version,
        kind=RecordKind.INITIAL if version == 1 else RecordKind.CHALLENGER,
        candidate={"name": f"cand{version}", "params": {}},
        previous_version=None if version == 1 else version - 1,
        reason=f"v{version} won",
        evidence={"metric": "accuracy", "challenger_metric": 0.9, "window": [1, 1000]},
        lineage={"topic": "t", "partition": 0, "last_offset": 1000 * version},
        artifact=ArtifactRef(f"dl:artifact:{version}", f"{version:064x}", 10, f"sig{version}"),
    ).signed(env["DRIFTLINE_SIGNING_KEY"].encode())


def test_a_canary_promoted_by_hand_is_rolled_out_and_a_shadow_stopped(driftline_env, driftline_cli):
    env = {**driftline_env, "DRIFTLINE_OPERATOR": "dana"}
    ensure_topics(
        Topics.from_prefix(env["DRIFTLINE_TOPIC_PREFIX"]),
        {"bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"]},
        partitions=1,
    )
    first, second = trainer_record(env, 1), trainer_record(env, 2)
    publish_records(env, first, second)
    client = client_for(env)

    def registry(*args: str) -> subprocess.CompletedProcess:
        result = driftline_cli("registry", *args, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        return result

    registry("promote", "sea", "v1", "--canary", "0.1", "--reason", "is v1 better live?")
    canary = client.history("sea")[-1]
    assert (canary.kind, canary.version, canary.rollout) == ("canary", 1, {"fraction": 0.1})
    assert (canary.operator, canary.previous_version, canary.artifact) == (
        "dana",
        2,
        first.artifact,
    )
    canary.verify(env["DRIFTLINE_SIGNING_KEY"].encode())
    state = client.state("sea")
    assert (state.stable, state.trial, state.canary_fraction) == (second, canary, 0.1)
    assert "v1 canary (10%)" in registry("ls").stdout

    rolled_out = registry("rollout", "sea", "--reason", "v1 holds up live")
    assert "sea: v1 serves now (was v2); rollout record by dana" in rolled_out.stdout
    rollout = client.history("sea")[-1]
    assert (rollout.kind, rollout.version, rollout.rollout) == ("rollout", 1, None)
    assert client.state("sea").trial is None and client.state("sea").stable == rollout

    registry("promote", "sea", "2", "--shadow", "--reason", "compare v2 quietly")
    assert client.state("sea").trial.kind == "shadow"
    stopped = registry("rollback", "sea", "--reason", "seen enough")
    assert "the trial of v2 is stopped, v1 serves alone" in stopped.stdout
    state = client.state("sea")
    assert (state.stable.kind, state.stable.version, state.trial) == ("rollback", 1, None)
    assert [record.kind for record in client.history("sea")] == [
        "initial",
        "challenger",
        "canary",
        "rollout",
        "shadow",
        "rollback",
    ]
