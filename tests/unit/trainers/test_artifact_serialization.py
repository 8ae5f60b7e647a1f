"""Artifacts are verified (digest, then HMAC of their identity) before they are unpickled."""

from __future__ import annotations

import pickle

import pytest

from trainers.errors import ArtifactIntegrityError
from trainers.serialization import dumps, sha256_hex, sign, signed_message, verify_and_load

KEY = b"k" * 32
IDENTITY = {"model": "fraud", "version": 3}


class Boom:
    """Unpickling this object would run code: it must never be reached for bad artifacts."""

    def __reduce__(self):
        return (pytest.fail, ("unverified bytes were unpickled",))


def test_round_trip():
    blob = dumps([1, {"a": 2}])
    signature = sign(blob, KEY, **IDENTITY)
    loaded = verify_and_load(
        blob, sha256=sha256_hex(blob), signature=signature, key=KEY, **IDENTITY
    )
    assert loaded == [1, {"a": 2}]


@pytest.mark.parametrize(
    ("digest", "signature", "published_as", "reason"),
    [
        ("0" * 64, "good", IDENTITY, "digest mismatch"),
        ("good", None, IDENTITY, "unsigned"),
        ("good", "", IDENTITY, "unsigned"),
        ("good", "0" * 64, IDENTITY, "bad signature"),
        # Correctly signed bytes, published under another model's or version's record.
        ("good", "good", {"model": "churn", "version": 3}, "bad signature: .* as churn v3"),
        ("good", "good", {"model": "fraud", "version": 4}, "bad signature: .* as fraud v4"),
    ],
)
def test_bad_artifacts_are_refused_without_unpickling(digest, signature, published_as, reason):
    blob = pickle.dumps(Boom())
    digest = sha256_hex(blob) if digest == "good" else digest
    signature = sign(blob, KEY, **IDENTITY) if signature == "good" else signature
    with pytest.raises(ArtifactIntegrityError, match=reason):
        verify_and_load(blob, sha256=digest, signature=signature, key=KEY, **published_as)


def test_signature_depends_on_key_bytes_model_and_version():
    reference = sign(b"a", KEY, **IDENTITY)
    assert sign(b"b", KEY, **IDENTITY) != reference
    assert sign(b"a", b"other", **IDENTITY) != reference
    assert sign(b"a", KEY, model="churn", version=3) != reference
    assert sign(b"a", KEY, model="fraud", version=4) != reference
    with pytest.raises(ValueError, match="empty key"):
        sign(b"a", b"", **IDENTITY)


def test_signed_messages_of_different_identities_never_coincide():
    # Naive concatenation would make ("a1", 2) and ("a", 12) the same message.
    digest = "0" * 64
    assert signed_message(model="a1", version=2, sha256=digest) != signed_message(
        model="a", version=12, sha256=digest
    )
    assert signed_message(model='a","b', version=1, sha256=digest) != signed_message(
        model="a", version=1, sha256=digest
    )
