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

Artifacts are pickled with `canonical_dumps`, so that the same model gives the same bytes in
every process: a river object left unseeded (``seed=None``, such as the Gaussian of each feature
in ``GaussianNB``) holds a random generator seeded from the operating system, whose state would
make two copies of one model differ in every byte of it. Such a generator is pickled as freshly
seeded with 0 instead (a model whose learning draws from it is random, and not verifiable; see
`trainers.lineage.nondeterminism`).

>>> from river.proba import Gaussian
>>> from trainers.serialization import canonical_dumps
>>> dumps(Gaussian()) == dumps(Gaussian())
False
>>> canonical_dumps(Gaussian()) == canonical_dumps(Gaussian())
True

References
----------
[^1]: RFC 2104, HMAC: Keyed-Hashing for Message Authentication.
[^2]: Python documentation, `pickle`: "Warning: The pickle module is not secure."; and
    `pickle.Pickler.reducer_override`.

"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import pickle
import random
from typing import Any

from trainers.errors import ArtifactIntegrityError

__all__ = [
    "canonical_dumps",
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


class _CanonicalPickler(pickle._Pickler):
    """The pure-Python pickler (the C one offers no hook per string), made canonical.

    Pickle refers back to an object it has written by its identity: two equal strings are
    written twice, or once and referred to, depending on whether they are one object, which
    depends on the process's history (a string read from a snapshot is not the one a literal
    made). Equal strings and bytes are therefore pickled as one object. Sets are written in
    sorted order, not in the order of their hashes (which ``PYTHONHASHSEED`` changes), and the
    random generator of an unseeded object as one seeded with 0.
    """

    def __init__(self, file: io.BytesIO) -> None:
        # Protocol 4: under 5, the pure-Python pickler writes numpy's buffers through a path
        # that memoizes the shared empty bytes twice (an AssertionError on an empty array).
        super().__init__(file, protocol=4)
        self._unseeded: set[int] = set()
        # Holds each first object of a value, so that its identity is not reused meanwhile.
        self._canonical: dict[tuple[type, Any], Any] = {}

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if type(obj) in (str, bytes):
            obj = self._canonical.setdefault((type(obj), obj), obj)
        super().save(obj, save_persistent_id)  # type: ignore[misc]  # typeshed omits it

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind in (set, frozenset):
            return kind, (sorted(obj, key=_sort_key),)
        # An owner is pickled before its attributes, so its generator is known when it comes.
        if kind is random.Random:
            return (random.Random, (0,)) if id(obj) in self._unseeded else NotImplemented
        state = getattr(obj, "__dict__", None)
        if state and state.get("seed", 0) is None and type(state.get("_rng")) is random.Random:
            self._unseeded.add(id(state["_rng"]))
        return NotImplemented


def _sort_key(item: Any) -> tuple[str, str]:
    return type(item).__qualname__, repr(item)


def canonical_dumps(model: Any) -> bytes:
    """Pickle `model` canonically (see the module docstring): the bytes of an artifact, the
    same in every process that learned the same events."""
    buffer = io.BytesIO()
    _CanonicalPickler(buffer).dump(model)
    return buffer.getvalue()


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
