"""The registry client against a registry that a real trainer worker published."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import time
from collections.abc import Callable

import pytest
import redis
from registry_helpers import (
    CreatesFile,
    client_for,
    publish_records,
    serving_changes,
    start_sea_training,
    train_sea,
    wait_for_records,
)

from streams.admin import ensure_topics
from streams.registry.artifacts import Artifact
from streams.registry.client import (
    ManualRecordRefused,
    RegistryClient,
    RegistrySubscription,
    UnknownModelError,
    UnknownVersionError,
)
from streams.registry.records import (
    ModelVersion,
    RecordKind,
    RecordSignatureError,
    manual_record,
)
from streams.topics import Topics
from trainers.candidates import Candidate
from trainers.errors import ArtifactIntegrityError

SEA_FEATURES = {"x0": 5.0, "x1": 2.0, "x2": 7.0}


def collect(subscription: RegistrySubscription, count: int, timeout: float = 30.0):
    records: list[ModelVersion] = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        records.extend(subscription.poll(0.5))
    return records


@pytest.fixture
def trained_sea(driftline_env: dict, spawn: Callable) -> RegistryClient:
    return train_sea(driftline_env, spawn)


def test_reads_and_follows_what_a_trainer_published(driftline_env, spawn):
    client = client_for(driftline_env)
    # Created before the registry topic may even exist: it must still see every record.
    from_now = client.subscribe()
    worker = start_sea_training(spawn)
    history = wait_for_records(client, "sea", 2)[:2]
    worker.terminate()

    assert [record.version for record in history] == [1, 2]
    assert [record.kind for record in history] == ["initial", "challenger"]
    assert client.models() == ["sea"]
    assert client.get("sea", 2) == history[1]
    assert client.latest("sea") == serving_changes(client.history("sea"))[-1]
    assert client.latest("unknown") is None
    with pytest.raises(UnknownVersionError, match="no version 99"):
        client.get("sea", 99)
    with pytest.raises(UnknownModelError):
        client.get("unknown", 1)

    with from_now:
        assert serving_changes(collect(from_now, 3))[:2] == history
    with client.subscribe(from_beginning=True) as from_start:
        assert serving_changes(collect(from_start, 3))[:2] == history
        assert from_start.caught_up or from_start.poll(0.1) == []

    model = client.load(history[-1])
    assert isinstance(model, Candidate)
    assert model.name == history[-1].candidate["name"]
    assert model.predict_one(SEA_FEATURES) in (True, False)
    assert set(model.predict_proba_one(SEA_FEATURES)) == {False, True}


def test_a_tampered_missing_or_foreign_artifact_is_never_unpickled(
    trained_sea, driftline_env, tmp_path
):
    latest = trained_sea.latest("sea")
    store = redis.Redis.from_url(driftline_env["REDIS_URL"])
    original = store.get(latest.artifact.key)
    assert original is not None
    marker = tmp_path / "unpickled"

    with pytest.raises(ArtifactIntegrityError, match="bad signature"):
        client_for(driftline_env, signing_key=b"another deployment's key").load(latest)
    with pytest.raises(ArtifactIntegrityError, match="DRIFTLINE_REDIS_PREFIX"):
        client_for(driftline_env, redis_prefix="elsewhere:").load(latest)

    # A payload that would leave a file behind if it were ever unpickled.
    store.set(latest.artifact.key, pickle.dumps(CreatesFile(str(marker))))
    with pytest.raises(ArtifactIntegrityError, match="digest mismatch"):
        trained_sea.load(latest)
    assert not marker.exists()

    store.delete(latest.artifact.key)
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        trained_sea.load(latest)
    store.set(latest.artifact.key, original)
    assert isinstance(trained_sea.load(latest), Candidate)


def test_rollback_and_promote_change_what_serves_without_new_versions(trained_sea, monkeypatch):
    monkeypatch.setenv("DRIFTLINE_OPERATOR", "alice")
    first, second = (trained_sea.get("sea", version) for version in (1, 2))
    assert trained_sea.latest("sea").version == 2

    rollback = trained_sea.rollback("sea", to=1, reason="v2 misbehaves in production")
    latest = trained_sea.latest("sea")
    assert latest == rollback
    assert (latest.version, latest.kind, latest.previous_version) == (1, "rollback", 2)
    assert latest.operator == "alice"
    assert latest.reason == "v2 misbehaves in production"
    assert (latest.candidate, latest.artifact, latest.lineage) == (
        first.candidate,
        first.artifact,
        first.lineage,
    )
    assert latest.evidence == {}
    # get() still answers with the trainer's record, and the model loads from the copied ref.
    assert trained_sea.get("sea", 1) == first
    assert isinstance(trained_sea.load(latest), Candidate)

    with pytest.raises(ManualRecordRefused, match="promote it instead"):
        trained_sea.rollback("sea", to=2, reason="forward is not back")

    promote = trained_sea.promote("sea", 2, reason="fixed upstream")
    assert trained_sea.latest("sea") == promote
    assert (promote.version, promote.kind, promote.previous_version) == (2, "manual", 1)
    assert promote.artifact == second.artifact

    history = serving_changes(trained_sea.history("sea"))
    assert [(r.version, r.kind) for r in history] == [
        (1, "initial"),
        (2, "challenger"),
        (1, "rollback"),
        (2, "manual"),
    ]

    with pytest.raises(ManualRecordRefused, match="already serving"):
        trained_sea.promote("sea", 2, reason="again")
    with pytest.raises(UnknownVersionError):
        trained_sea.rollback("sea", to=7, reason="no such version")
    with pytest.raises(UnknownModelError):
        trained_sea.promote("nope", 1, reason="no such model")
    assert len(serving_changes(trained_sea.history("sea"))) == 4


def test_the_registry_command_lists_shows_diffs_and_rolls_back(
    trained_sea, driftline_env, driftline_cli
):
    def driftline(*args: str) -> subprocess.CompletedProcess:
        env = {**driftline_env, "DRIFTLINE_OPERATOR": "carol"}
        return driftline_cli("registry", *args, env=env, timeout=60)

    listing = driftline("ls")
    assert listing.returncode == 0, listing.stderr
    assert "sea" in listing.stdout and "v2" in listing.stdout
    shown = driftline("show", "sea", "2")
    assert json.loads(shown.stdout) == dataclasses.asdict(trained_sea.get("sea", 2))
    diff = driftline("diff", "sea", "1", "2")
    assert "candidate.name" in diff.stdout and "artifact.sha256" in diff.stdout

    rolled_back = driftline("rollback", "sea", "--to", "1", "--reason", "canary failed")
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert "v1 serves now (was v2)" in rolled_back.stdout
    latest = trained_sea.latest("sea")
    assert (latest.version, latest.kind, latest.operator) == (1, "rollback", "carol")
    assert "canary failed" in driftline("history", "sea").stdout

    refused = driftline("promote", "sea", "9", "--reason", "no such version")
    assert refused.returncode == 2
    assert "no version 9" in refused.stderr


def hand_made_registry(env: dict) -> list[ModelVersion]:
    """sea v1 and v2, published and stored as a trainer would (no trainer runs): their records."""
    key, prefix = env["DRIFTLINE_SIGNING_KEY"].encode(), env["DRIFTLINE_REDIS_PREFIX"]
    ensure_topics(
        Topics.from_prefix(env["DRIFTLINE_TOPIC_PREFIX"]),
        {"bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"]},
        partitions=1,
    )
    store = redis.Redis.from_url(env["REDIS_URL"])
    records = []
    for version in (1, 2):
        artifact = Artifact.pack(
            f"sea v{version}", model="sea", version=version, prefix=prefix, key=key
        )
        store.set(artifact.ref.key, artifact.blob)
        records.append(
            ModelVersion(
                model="sea",
                version=version,
                kind=RecordKind.INITIAL if version == 1 else RecordKind.CHALLENGER,
                candidate={"name": f"c{version}", "params": {}},
                previous_version=None if version == 1 else 1,
                reason=f"v{version} won",
                evidence={"p_value": 0.001},
                lineage={"topic": "t", "partition": 0, "last_offset": 1000 * version},
                artifact=artifact.ref,
            ).signed(key)
        )
    store.close()
    publish_records(env, *records)
    return records


def test_records_nobody_with_the_key_wrote_are_refused(driftline_env, caplog):
    first, second = hand_made_registry(driftline_env)
    # A rollback to v1, as whoever can write to the registry topic but lacks the key would
    # publish it: it names v1's genuine artifact, whose own signature checks out.
    rollback = manual_record(
        first, kind=RecordKind.ROLLBACK, previous_version=2, reason="forged", operator="mallory"
    )
    forged = {
        "unsigned": rollback,
        "signed with another key": rollback.signed(b"another deployment's key"),
        "v1's signature copied": dataclasses.replace(rollback, signature=first.signature),
        "v2 edited": dataclasses.replace(second, reason="edited", signature=second.signature),
    }
    publish_records(driftline_env, *forged.values())
    client = client_for(driftline_env)

    assert client.history("sea") == [first, second]
    assert client.latest("sea") == second
    assert client.serving()["sea"] == second
    assert client.get("sea", 1) == first
    assert "mallory" in caplog.text  # each refusal is logged
    with client.subscribe(from_beginning=True) as subscription:
        assert collect(subscription, 2) == [first, second]
        assert subscription.poll(1.0) == []
    for record in forged.values():
        with pytest.raises(RecordSignatureError, match="sea v"):
            client.load(record)
    assert client.load(first) == "sea v1"
    # Whoever holds another key sees no record at all.
    assert client_for(driftline_env, signing_key=b"a third key").models() == []


def test_a_manual_record_of_the_cli_is_signed_and_obeyed(driftline_env, driftline_cli):
    first, second = hand_made_registry(driftline_env)
    env = {**driftline_env, "DRIFTLINE_OPERATOR": "carol"}
    rolled_back = driftline_cli(
        "registry", "rollback", "sea", "--to", "1", "--reason", "v2 misbehaves", env=env
    )
    assert rolled_back.returncode == 0, rolled_back.stderr

    client = client_for(driftline_env)
    history = client.history("sea")
    assert history[:2] == [first, second]
    manual = history[2]
    assert (manual.kind, manual.version, manual.operator) == (RecordKind.ROLLBACK, 1, "carol")
    manual.verify(driftline_env["DRIFTLINE_SIGNING_KEY"].encode())
    assert client.latest("sea") == manual
    assert client.load(manual) == "sea v1"

    # Without the key, the CLI can neither read nor sign.
    keyless = {name: value for name, value in env.items() if name != "DRIFTLINE_SIGNING_KEY"}
    refused = driftline_cli("registry", "promote", "sea", "2", "--reason", "r", env=keyless)
    assert refused.returncode == 2
    assert "no signing key" in refused.stderr
    assert len(client.history("sea")) == 3
