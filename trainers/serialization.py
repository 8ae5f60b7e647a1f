"""Model artifacts: pickled bytes with a SHA-256 digest and an HMAC-SHA256 signature.

Unpickling runs arbitrary code, so an artifact is only unpickled after both checks pass:
`verify_and_load` compares the digest first (catches corruption and truncation), then the
HMAC signature with a constant-time comparison (catches tampering and artifacts from a party
without the key), and raises `ArtifactIntegrityError` without touching the bytes otherwise.

The signature covers the artifact's identity, not only its bytes: the model name, the version
number and the digest (see `signed_message`). A correctly signed artifact of one model therefore
cannot be passed off as another model's, or as another version of the same model, by editing a
registry record: the bytes alone say nothing about which model they are, and finding out would
mean unpickling them.

Examples
--------
>>> from trainers.serialization import dumps, sha256_hex, sign, verify_and_load
>>> key = b"secret key"
>>> blob = dumps({"weights": [1, 2, 3]})
>>> digest, signature = sha256_hex(blob), sign(blob, key, model="fraud", version=2)
>>> verify_and_load(blob, model="fraud", version=2, sha256=digest, signature=signature, key=key)
{'weights': [1, 2, 3]}
>>> verify_and_load(
...     blob + b"!", model="fraud", version=2, sha256=digest, signature=signature, key=key
... )
Traceback (most recent call last):
...
trainers.errors.ArtifactIntegrityError: digest mismatch: the bytes differ from the published ones
>>> verify_and_load(blob, model="churn", version=2, sha256=digest, signature=signature, key=key)
Traceback (most recent call last):
...
trainers.errors.ArtifactIntegrityError: bad signature: not signed with this key as churn v2

References
----------
[^1]: RFC 2104, HMAC: Keyed-Hashing for Message Authentication.
[^2]: Python documentation, `pickle`: "Warning: The pickle module is not secure."

"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from typing import Any

from trainers.errors import ArtifactIntegrityError

__all__ = [
    "dumps",
    "hmac_sha256_hex",
    "sha256_hex",
    "sign",
    "signed_message",
    "verify_and_load",
]

# Names the message format, so that a future format can never verify against this one.
_SIGNATURE_SCHEME = "driftline-artifact/2"


def dumps(model: Any) -> bytes:
    """Pickle `model` with the highest protocol."""
    return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def sha256_hex(blob: bytes) -> str:
    """Hex SHA-256 digest of `blob`."""
    return hashlib.sha256(blob).hexdigest()


def signed_message(*, model: str, version: int, sha256: str) -> bytes:
    """The bytes a signature covers: the scheme, the model name, the version and the digest.

    A JSON array, so that no two identities share a message (a model name may hold any
    character; compact separators and ASCII escapes make the encoding canonical).
    """
    identity = [_SIGNATURE_SCHEME, model, version, sha256.lower()]
    return json.dumps(identity, separators=(",", ":"), ensure_ascii=True).encode()


def hmac_sha256_hex(key: bytes, message: bytes) -> str:
    """Hex HMAC-SHA256 of `message` under `key`: what signs artifacts, and anything else the
    deployment's key vouches for. `message` should begin with a scheme of its own (such as
    `signed_message`'s), so that no signature made for one purpose verifies for another.
    """
    if not key:
        raise ValueError("an empty key cannot sign anything")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(blob: bytes, key: bytes, *, model: str, version: int) -> str:
    """Hex HMAC-SHA256 under `key` of `blob` as version `version` of `model`."""
    message = signed_message(model=model, version=version, sha256=sha256_hex(blob))
    return hmac_sha256_hex(key, message)


def verify_and_load(
    blob: bytes, *, model: str, version: int, sha256: str, signature: str | None, key: bytes
) -> Any:
    """Check `blob` against its digest and its signature as `model` `version`, then unpickle it.

    Parameters
    ----------
    blob
        The pickled artifact.
    model, version
        Which model version the artifact is published as (the registry record's).
    sha256
        Its published hex SHA-256 digest.
    signature
        Its published hex HMAC-SHA256 signature; None or empty for an unsigned artifact, which
        is refused.
    key
        The signing key.

    """
    if not hmac.compare_digest(sha256_hex(blob), str(sha256).lower()):
        raise ArtifactIntegrityError("digest mismatch: the bytes differ from the published ones")
    if not signature:
        raise ArtifactIntegrityError("unsigned: the artifact has no signature")
    expected = sign(blob, key, model=model, version=version)
    if not hmac.compare_digest(expected, str(signature).lower()):
        raise ArtifactIntegrityError(
            f"bad signature: not signed with this key as {model} v{version}"
        )
    return pickle.loads(blob)
