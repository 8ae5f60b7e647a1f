"""Registry records: (de)serialization, manual records, serving versions, diffs."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import orjson
import pytest

from streams.registry import records as registry
from streams.registry.artifacts import Artifact, load
from streams.registry.cli import record_differences
from streams.registry.records import (
    MANUAL_KINDS,
    ArtifactRef,
    ModelVersion,
    RecordKind,
    RecordSignatureError,
    ServingState,
    default_operator,
    manual_record,
    parse_record,
    serving_records,
    serving_state,
    verified,
)
from trainers.errors import ArtifactIntegrityError
from trainers.serialization import hmac_sha256_hex
from trainers.trainer import Promotion

KEY = b"deployment key"


def trained(version: int, *, model: str = "sea", candidate: str = "steady") -> ModelVersion:
    return ModelVersion(
        model=model,
        version=version,
        kind="initial" if version == 1 else "challenger",
        candidate={"name": candidate, "params": {"lr": 0.01 * version}},
        previous_version=None if version == 1 else version - 1,
        reason=f"v{version} won",
        evidence={"p_value": 0.001 * version, "window": [1, 1000]},
        lineage={"topic": "t", "partition": 0, "last_offset": 1000 * version},
        artifact=ArtifactRef(
            key=f"dl:artifact:{version:064x}",
            sha256=f"{version:064x}",
            size=100 + version,
            signature=f"{version:064x}",
        ),
        libraries={"python": "3.11.0", "river": "0.26.1"},
    )


def test_a_record_round_trips_through_json_with_its_operator():
    record = manual_record(
        trained(1), kind="rollback", previous_version=3, reason="bad", operator="alice"
    )
    assert ModelVersion.from_json(record.to_json()) == record


def test_records_written_before_operator_existed_still_parse():
    record = trained(2)
    data = dataclasses.asdict(record)
    del data["operator"]
    assert ModelVersion.from_json(orjson.dumps(data)) == record


def test_fields_a_newer_writer_adds_are_ignored():
    record = trained(2)
    data = {**dataclasses.asdict(record), "approved_by": ["bob"]}
    assert ModelVersion.from_json(orjson.dumps(data)) == record


@pytest.mark.parametrize(
    "raw", [None, b"", b"not json", b"[1, 2]", b'{"model": "sea"}', b'{"artifact": {}}']
)
def test_a_malformed_record_is_skipped_not_raised(raw):
    assert parse_record(raw, where="registry[0]@7", key=KEY) is None


def test_a_manual_record_repeats_the_target_and_says_who_and_why():
    target = trained(1)
    record = manual_record(
        target, kind="rollback", previous_version=3, reason="v3 misbehaves", operator="alice"
    )
    assert record.version == 1
    assert record.kind == "rollback"
    assert record.is_manual and not target.is_manual
    assert record.previous_version == 3
    assert (record.reason, record.operator, record.evidence) == ("v3 misbehaves", "alice", {})
    for same in ("model", "candidate", "artifact", "lineage", "libraries"):
        assert getattr(record, same) == getattr(target, same)


@pytest.mark.parametrize(
    ("kind", "reason", "message"),
    [("challenger", "why", "kind"), ("manual", "  ", "reason")],
)
def test_a_manual_record_needs_a_manual_kind_and_a_reason(kind, reason, message):
    with pytest.raises(ValueError, match=message):
        manual_record(trained(1), kind=kind, previous_version=2, reason=reason, operator="a")


def test_the_serving_version_is_that_of_the_last_record_in_log_order():
    rollback = manual_record(
        trained(1), kind="rollback", previous_version=3, reason="r", operator="o"
    )
    records = [trained(1), trained(2), trained(1, model="other"), trained(3), rollback]
    serving = serving_records(records)
    assert serving["sea"] is rollback
    assert serving["other"].version == 1


def test_the_operator_comes_from_the_environment_else_the_os_user(monkeypatch):
    assert default_operator({"DRIFTLINE_OPERATOR": "alice"}) == "alice"
    monkeypatch.setattr(registry.getpass, "getuser", lambda: "bob")
    assert default_operator({}) == "bob"

    def no_user() -> str:
        raise OSError("no login name")

    monkeypatch.setattr(registry.getpass, "getuser", no_user)
    assert default_operator({}) == "unknown"


def test_a_diff_lists_the_leaves_that_differ():
    first, second = trained(1), trained(2, candidate="agile")
    differences = {name: (a, b) for name, a, b in record_differences(first, second)}
    assert differences["candidate.name"] == ("steady", "agile")
    assert differences["candidate.params.lr"] == (0.01, 0.02)
    assert differences["evidence.p_value"] == (0.001, 0.002)
    assert differences["artifact.sha256"] == (first.artifact.sha256, second.artifact.sha256)
    assert "evidence.window" not in differences
    assert "version" not in differences and "created_at" not in differences
    assert record_differences(first, first) == []
    signed = {name for name, *_ in record_differences(first.signed(KEY), second.signed(b"k"))}
    assert "signature" not in signed


def test_kinds_keep_their_json_values():
    assert {kind.value for kind in RecordKind} == {
        *["initial", "challenger", "refresh", "canary", "shadow"],
        *["manual", "rollout", "rollback", "alert", "drift", "action"],
    }
    assert {RecordKind.MANUAL, RecordKind.ROLLBACK} == MANUAL_KINDS
    record = trained(1)
    assert record.kind is RecordKind.INITIAL  # the string given became the enum
    assert orjson.loads(record.to_json())["kind"] == "initial"
    assert ModelVersion.from_json(record.to_json()).kind is RecordKind.INITIAL
    with pytest.raises(ValueError, match="'promoted'"):
        dataclasses.replace(record, kind="promoted")


def test_a_record_of_an_unknown_kind_is_skipped_as_malformed(caplog):
    data = {**orjson.loads(trained(1).signed(KEY).to_json()), "kind": "experiment"}
    with caplog.at_level(logging.ERROR, "driftline.registry"):
        assert parse_record(orjson.dumps(data), where="registry[0]@3", key=KEY) is None
    assert "registry[0]@3" in caplog.text


def test_the_record_of_a_promotion_copies_every_field():
    ref = trained(2).artifact
    promotion = Promotion(
        model="sea",
        version=2,
        previous_version=1,
        candidate="agile",
        candidate_params={"name": "agile", "river": "LogisticRegression"},
        kind="challenger",
        reason="agile won",
        evidence={"p_value": 0.001},
        lineage={"topic": "t", "partition": 3, "last_offset": 999, "anything": ["as", "is"]},
        estimator=object(),  # not part of the record: the artifact stands for it
    )
    record = ModelVersion.from_promotion(promotion, ref)
    assert (record.model, record.version, record.previous_version) == ("sea", 2, 1)
    assert record.kind is RecordKind.CHALLENGER
    assert record.candidate == {"name": "agile", "params": promotion.candidate_params}
    assert (record.reason, record.evidence) == ("agile won", {"p_value": 0.001})
    assert record.lineage == promotion.lineage
    assert record.artifact == ref
    assert (record.operator, record.signature) == (None, None)
    assert record.libraries["python"]


def test_a_signed_record_verifies_after_the_round_trip_through_json():
    record = dataclasses.replace(
        trained(2), evidence={"p_value": np.float64(0.25), "counts": (np.int64(3), 4)}
    )
    signed = record.signed(KEY)
    assert signed.signature and record.signature is None
    signed.verify(KEY)
    read_back = parse_record(signed.to_json(), where="registry[0]@1", key=KEY)
    assert read_back == ModelVersion.from_json(signed.to_json())
    read_back.verify(KEY)


def test_a_manual_record_signed_by_the_operators_key_verifies():
    record = manual_record(
        trained(1), kind=RecordKind.ROLLBACK, previous_version=3, reason="bad", operator="alice"
    )
    assert record.signature is None  # the target's signature is not carried over
    ModelVersion.from_json(record.signed(KEY).to_json()).verify(KEY)


def forgeries() -> dict[str, ModelVersion]:
    """Records someone without the key wrote; each reuses genuine, correctly signed parts."""
    genuine = trained(1).signed(KEY)
    rollback = manual_record(
        genuine, kind=RecordKind.ROLLBACK, previous_version=3, reason="forged", operator="mallory"
    )
    return {
        "unsigned": rollback,
        "signed with another key": rollback.signed(b"another deployment's key"),
        # The genuine v1 record's signature (and artifact) on a rollback to it.
        "signature copied": dataclasses.replace(rollback, signature=genuine.signature),
        "edited": dataclasses.replace(genuine, reason="edited after signing"),
    }


@pytest.mark.parametrize("case", forgeries())
def test_a_record_nobody_with_the_key_wrote_is_refused(case, caplog):
    forged = forgeries()[case]
    with pytest.raises(RecordSignatureError, match="sea v1") as refused:
        forged.verify(KEY)
    assert isinstance(refused.value, ArtifactIntegrityError)  # refused like a bad artifact
    with caplog.at_level(logging.ERROR, "driftline.registry"):
        assert parse_record(forged.to_json(), where="registry[0]@9", key=KEY) is None
    assert "registry[0]@9" in caplog.text


def test_verified_keeps_the_signed_records_in_order_and_logs_the_others(caplog):
    good = [trained(version).signed(KEY) for version in (1, 2, 3)]
    forged = list(forgeries().values())
    mixed = [good[0], forged[0], good[1], forged[1], forged[2], good[2], forged[3]]
    with caplog.at_level(logging.ERROR, "driftline.registry"):
        assert verified(mixed, KEY) == good
    assert len(caplog.records) == len(forged)
    assert "mallory" in caplog.text


def test_a_newer_writers_fields_are_covered_by_its_signature_and_still_verify():
    # As a newer writer signs: over every field it writes, one this reader does not know too.
    newer = {**orjson.loads(trained(2).to_json()), "approved_by": ["bob"]}
    message = ModelVersion.from_json(orjson.dumps(newer))._signed_message()
    newer["signature"] = hmac_sha256_hex(KEY, message)
    parsed = ModelVersion.from_json(orjson.dumps(newer))
    parsed.verify(KEY)  # an old reader verifies what it cannot fully read
    newer["approved_by"] = ["mallory"]
    with pytest.raises(RecordSignatureError):
        ModelVersion.from_json(orjson.dumps(newer)).verify(KEY)


class FakeRedis:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.reads: list[str] = []

    def get(self, key: str) -> bytes | None:
        self.reads.append(key)
        return self.blobs.get(key)


def test_an_artifact_packs_and_loads_only_as_the_version_it_was_signed_as():
    artifact = Artifact.pack({"weights": [1, 2]}, model="sea", version=2, prefix="dl:", key=KEY)
    assert artifact.ref.key == f"dl:artifact:{artifact.ref.sha256}"
    assert artifact.ref.size == len(artifact.blob)
    assert "blob" not in repr(artifact)
    assert artifact.load(model="sea", version=2, key=KEY) == {"weights": [1, 2]}
    with pytest.raises(ArtifactIntegrityError, match="bad signature"):
        artifact.load(model="sea", version=3, key=KEY)
    record = dataclasses.replace(trained(2), artifact=artifact.ref).signed(KEY)
    assert load(FakeRedis({artifact.ref.key: artifact.blob}), record, key=KEY) == {
        "weights": [1, 2]
    }


@pytest.mark.parametrize("case", forgeries())
def test_loading_a_forged_record_refuses_before_touching_redis(case):
    artifact = Artifact.pack("v1", model="sea", version=1, prefix="dl:", key=KEY)
    forged = dataclasses.replace(forgeries()[case], artifact=artifact.ref)
    store = FakeRedis({artifact.ref.key: artifact.blob})
    with pytest.raises(RecordSignatureError):
        load(store, forged, key=KEY)
    assert store.reads == []


def test_a_trial_serves_beside_the_stable_version_until_a_rollout_or_a_rollback():
    stable, canary = (
        trained(1),
        dataclasses.replace(trained(2), kind="canary", rollout={"fraction": 0.1}),
    )
    state = serving_state([stable, canary])["sea"]
    assert (state.stable.version, state.trial.version, state.canary_fraction) == (1, 2, 0.1)
    rolled_out = dataclasses.replace(canary, kind="rollout", rollout=None)
    assert serving_state([stable, canary, rolled_out])["sea"] == ServingState(rolled_out)
    alert = dataclasses.replace(stable, kind="alert")
    assert serving_state([stable, canary, alert])["sea"] == state
    shadow = dataclasses.replace(canary, kind="shadow")
    assert serving_state([stable, shadow])["sea"].canary_fraction == 0.0
    assert serving_state([canary])["sea"] == ServingState(canary), "a first version serves"
    assert serving_records([stable, canary]) == {"sea": stable}
