"""Model artifacts in Redis: content-addressed, signed, verified before they are unpickled.

An :class:`Artifact` is a model's pickled bytes and the :class:`ArtifactRef` a registry record
publishes for them. It is stored under ``<prefix>artifact:<sha256>``: storing the same bytes
twice changes nothing, and a key can never hold other bytes than its name says. A store waits for
the ``[redis] durability`` it is given (:mod:`streams.durability`). The signature
(HMAC-SHA256 with the deployment's key) travels in the registry record, not in Redis, so whoever
can write to Redis still cannot make a worker load a model of their own. It covers the model name
and version as well as the bytes (:func:`trainers.serialization.signed_message`), so whoever can
write to the registry topic cannot make one model serve another model's artifact either; and
:func:`load` checks the record's own signature first (:meth:`ModelVersion.verify`), so they
cannot publish a record of their own that names a genuine artifact.

An artifact missing from Redis (lost with it, or deleted) raises :class:`ArtifactMissing`: it
can be rebuilt from its lineage and stored again with the same digest (``driftline registry
restore-artifacts``, or the trainer as it learns the version again), so a reader may wait for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from streams.durability import NO_WAIT, Durability
from streams.registry.records import ArtifactRef, ModelVersion
from trainers.errors import ArtifactIntegrityError
from trainers.serialization import canonical_dumps, sha256_hex, sign, verify_and_load

__all__ = ["Artifact", "ArtifactMissing", "artifact_key", "load", "store", "store_again"]


class ArtifactMissing(ArtifactIntegrityError):
    """Redis holds nothing under the key a record names: the artifact may come back (the same
    bytes, stored again), unlike altered or unsigned bytes."""


def artifact_key(prefix: str, sha256: str) -> str:
    """The Redis key of the artifact whose digest is ``sha256``, in the namespace ``prefix``."""
    return f"{prefix}artifact:{sha256}"


@dataclass(frozen=True)
class Artifact:
    """A model's pickled bytes and the reference that names, checks and signs them."""

    blob: bytes = field(repr=False)
    ref: ArtifactRef

    @classmethod
    def pack(cls, estimator: Any, *, model: str, version: int, prefix: str, key: bytes) -> Artifact:
        """Serialize ``estimator`` as ``model`` ``version`` and sign it with ``key``; its Redis
        key is in the namespace ``prefix``."""
        blob = canonical_dumps(estimator)
        digest = sha256_hex(blob)
        return cls(
            blob,
            ArtifactRef(
                key=artifact_key(prefix, digest),
                sha256=digest,
                size=len(blob),
                signature=sign(blob, key, model=model, version=version),
            ),
        )

    def load(self, *, model: str, version: int, key: bytes) -> Any:
        """Unpickle the model, only if the bytes are those ``ref`` names, signed with ``key``
        as ``model`` ``version``.

        Raises :class:`~trainers.errors.ArtifactIntegrityError`, without unpickling anything,
        otherwise.
        """
        ref = self.ref
        if ref.key != artifact_key(ref.key.rsplit("artifact:", 1)[0], ref.sha256):
            raise ArtifactIntegrityError(f"key {ref.key} does not name digest {ref.sha256}")
        return verify_and_load(
            self.blob,
            model=model,
            version=version,
            sha256=ref.sha256,
            signature=ref.signature,
            key=key,
        )


async def store(
    client: aioredis.Redis, artifact: Artifact, durability: Durability = NO_WAIT
) -> None:
    """Store ``artifact`` (idempotent: its key is its digest), as durably as ``durability`` asks.

    Raises :class:`~streams.durability.DurabilityNotMet` when it is not, in time.
    """
    ref = artifact.ref
    # A SET NX of a key that exists writes nothing, so a wait after it would not cover the bytes
    # an earlier attempt (whose own wait failed) wrote: a waiting store rewrites them instead,
    # the same bytes, since the key is their digest.
    await durability.write(
        client,
        lambda redis_client: redis_client.set(ref.key, artifact.blob, nx=not durability.waits),
        what=f"the artifact {ref.key}",
    )


def store_again(client: redis.Redis, artifact: Artifact) -> bool:
    """:func:`store` through a blocking client: for an artifact rebuilt after it went missing.

    A plain ``SET NX`` (a trainer that learned the version again meanwhile stored the same
    bytes), acknowledged by the primary alone: it does not wait for ``[redis] durability``, which
    is the workers' configuration. True when Redis did not hold the artifact yet.
    """
    return bool(client.set(artifact.ref.key, artifact.blob, nx=True))


def load(client: redis.Redis, record: ModelVersion, *, key: bytes) -> Any:
    """Fetch the artifact ``record`` names; unpickle it only if the record and the artifact both
    check out.

    Raises :class:`~streams.registry.records.RecordSignatureError` for a record nobody with
    ``key`` signed, and :class:`~trainers.errors.ArtifactIntegrityError` for a missing, altered
    or unsigned artifact, one signed with another key, or one signed as another model or version
    (its subclass :class:`ArtifactMissing` for a missing one).
    """
    record.verify(key)
    blob = client.get(record.artifact.key)
    if not isinstance(blob, bytes):
        raise ArtifactMissing(f"missing: no artifact under {record.artifact.key}")
    return Artifact(blob, record.artifact).load(model=record.model, version=record.version, key=key)
