"""Model artifacts in Redis: content-addressed, signed, verified before they are unpickled.

An artifact is stored under ``<prefix>artifact:<sha256>``: storing the same bytes twice is a
no-op, and a key can never hold other bytes than its name says. The signature (HMAC-SHA256 with
the deployment's key) travels in the registry record, not in Redis, so whoever can write to
Redis still cannot make a worker load a model of their own. It covers the model name and version
as well as the bytes (:func:`trainers.serialization.signed_message`), so whoever can write to the
registry topic cannot make one model serve another model's artifact either.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio as aioredis

from streams.registry.records import ArtifactRef, ModelVersion
from trainers.errors import ArtifactIntegrityError
from trainers.serialization import dumps, sha256_hex, sign, verify_and_load

DEFAULT_REDIS_PREFIX = "driftline:"


def redis_prefix(environ: Mapping[str, str] | None = None) -> str:
    """Namespace of driftline's Redis keys: ``$DRIFTLINE_REDIS_PREFIX`` (default ``driftline:``)."""
    env = os.environ if environ is None else environ
    return env.get("DRIFTLINE_REDIS_PREFIX", DEFAULT_REDIS_PREFIX)


def artifact_key(prefix: str, sha256: str) -> str:
    return f"{prefix}artifact:{sha256}"


def pack(
    estimator: Any, *, model: str, version: int, prefix: str, key: bytes
) -> tuple[bytes, ArtifactRef]:
    """Serialize ``estimator`` as ``model`` ``version``: its bytes, Redis key, digest, signature."""
    blob = dumps(estimator)
    digest = sha256_hex(blob)
    signature = sign(blob, key, model=model, version=version)
    return blob, ArtifactRef(
        key=artifact_key(prefix, digest), sha256=digest, size=len(blob), signature=signature
    )


async def store(client: aioredis.Redis, blob: bytes, ref: ArtifactRef) -> None:
    """Store an artifact (idempotent: its key is its digest)."""
    await client.set(ref.key, blob, nx=True)


def load(client: redis.Redis, record: ModelVersion, *, key: bytes) -> Any:
    """Fetch the artifact ``record`` names; unpickle it only if it checks out as that version.

    Raises :class:`~trainers.errors.ArtifactIntegrityError` for a missing, altered or unsigned
    artifact, one signed with another key, or one signed as another model or version.
    """
    ref = record.artifact
    if ref.key != artifact_key(ref.key.rsplit("artifact:", 1)[0], ref.sha256):
        raise ArtifactIntegrityError(f"key {ref.key} does not name digest {ref.sha256}")
    blob = client.get(ref.key)
    if blob is None:
        raise ArtifactIntegrityError(f"missing: no artifact under {ref.key}")
    return verify_and_load(
        blob,
        model=record.model,
        version=record.version,
        sha256=ref.sha256,
        signature=ref.signature,
        key=key,
    )
