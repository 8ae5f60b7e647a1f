"""Model artifacts: pickled bytes with a SHA-256 digest and an HMAC-SHA256 signature.

Unpickling runs arbitrary code, so an artifact is only unpickled after both checks pass:
`verify_and_load` compares the digest first (catches corruption and truncation), then the
HMAC signature with a constant-time comparison (catches tampering and artifacts from a party
without the key), and raises `ArtifactIntegrityError` without touching the bytes otherwise.

Examples
--------
>>> from trainers.serialization import dumps, sha256_hex, sign, verify_and_load
>>> key = b"secret key"
>>> blob = dumps({"weights": [1, 2, 3]})
>>> digest, signature = sha256_hex(blob), sign(blob, key)
>>> verify_and_load(blob, sha256=digest, signature=signature, key=key)
{'weights': [1, 2, 3]}
>>> verify_and_load(blob + b"!", sha256=digest, signature=signature, key=key)
Traceback (most recent call last):
...
trainers.errors.ArtifactIntegrityError: digest mismatch: the bytes differ from the published ones
>>> verify_and_load(blob, sha256=digest, signature=sign(blob, b"other key"), key=key)
Traceback (most recent call last):
...
trainers.errors.ArtifactIntegrityError: bad signature: the artifact was not signed with this key

References
----------
[^1]: RFC 2104, HMAC: Keyed-Hashing for Message Authentication.
[^2]: Python documentation, `pickle`: "Warning: The pickle module is not secure."

"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

from trainers.errors import ArtifactIntegrityError

__all__ = ["dumps", "sha256_hex", "sign", "verify_and_load"]


def dumps(model: Any) -> bytes:
    """Pickle `model` with the highest protocol."""
    return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def sha256_hex(blob: bytes) -> str:
    """Hex SHA-256 digest of `blob`."""
    return hashlib.sha256(blob).hexdigest()


def sign(blob: bytes, key: bytes) -> str:
    """Hex HMAC-SHA256 of `blob` under `key`."""
    if not key:
        raise ValueError("an empty key cannot sign artifacts")
    return hmac.new(key, blob, hashlib.sha256).hexdigest()


def verify_and_load(blob: bytes, *, sha256: str, signature: str | None, key: bytes) -> Any:
    """Check `blob` against its digest and signature, then unpickle it.

    Parameters
    ----------
    blob
        The pickled artifact.
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
    if not hmac.compare_digest(sign(blob, key), str(signature).lower()):
        raise ArtifactIntegrityError("bad signature: the artifact was not signed with this key")
    return pickle.loads(blob)
