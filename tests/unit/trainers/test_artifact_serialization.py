"""Artifacts are verified (digest, then HMAC) before they are unpickled."""

from __future__ import annotations

import pickle

import pytest

from trainers.errors import ArtifactIntegrityError
from trainers.serialization import dumps, sha256_hex, sign, verify_and_load

KEY = b"k" * 32


class Boom:
    """Unpickling this object would run code: it must never be reached for bad artifacts."""

    def __reduce__(self):
        return (pytest.fail, ("unverified bytes were unpickled",))


def test_round_trip():
    blob = dumps([1, {"a": 2}])
    assert verify_and_load(blob, sha256=sha256_hex(blob), signature=sign(blob, KEY), key=KEY) == [
        1,
        {"a": 2},
    ]


@pytest.mark.parametrize(
    ("digest", "signature", "reason"),
    [
        ("0" * 64, "good", "digest mismatch"),
        ("good", None, "unsigned"),
        ("good", "", "unsigned"),
        ("good", "0" * 64, "bad signature"),
    ],
)
def test_bad_artifacts_are_refused_without_unpickling(digest, signature, reason):
    blob = pickle.dumps(Boom())
    digest = sha256_hex(blob) if digest == "good" else digest
    signature = sign(blob, KEY) if signature == "good" else signature
    with pytest.raises(ArtifactIntegrityError, match=reason):
        verify_and_load(blob, sha256=digest, signature=signature, key=KEY)


def test_signature_depends_on_key_and_bytes():
    assert sign(b"a", KEY) != sign(b"b", KEY)
    assert sign(b"a", KEY) != sign(b"a", b"other")
    with pytest.raises(ValueError, match="empty key"):
        sign(b"a", b"")
