"""Artifacts that must never be loaded: refused by the registry client and by a scoring worker.

One trainer publishes sea v1 for the whole module; each test then publishes, by hand, a new
version of sea (the next number, kind ``challenger``) whose artifact is bad in one way:

- ``altered_bytes``: the record is correctly signed, but Redis holds other bytes under its key;
- ``wrong_signature``: the record carries the signature of another deployment's key;
- ``missing_artifact``: nothing is stored under the key the record names;
- ``another_models_artifact``: the record points at a valid artifact, correctly signed with this
  deployment's key, of ANOTHER model (same version number). Its digest and its HMAC over the
  bytes both check out: only a signature that covers the model name refuses it.

The records themselves are signed with the deployment's key, as a trainer signs them: only the
artifact is bad. (Records nobody with the key signed are refused before any artifact is looked at:
see ``test_registry_client.py``.) In every case the bytes in Redis would create a file if
anything unpickled them.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from pipeline import wait_for
from registry_helpers import CreatesFile, Scoring, publish_hand_made_version, train_sea

from streams.registry.artifacts import Artifact
from streams.registry.client import RegistryClient
from streams.registry.records import ModelVersion
from trainers.errors import ArtifactIntegrityError

pytestmark = pytest.mark.timeout(180)

# What each case's refusal says (a regular expression, as pytest.raises takes it).
REFUSALS = {
    "altered_bytes": "digest mismatch",
    "wrong_signature": "bad signature",
    "missing_artifact": "missing",
    "another_models_artifact": r"bad signature: .* as sea v\d+",
}


@dataclass(frozen=True)
class Deployment:
    """The module's deployment: its environment, a registry client, the version that serves."""

    env: dict
    client: RegistryClient
    serving: ModelVersion


@pytest.fixture(scope="module")
def deployment(module_driftline_env: dict, module_spawn: Callable) -> Deployment:
    # A short stream: v1 comes after the 1,000 events of the warm-up, within seconds.
    client = train_sea(module_driftline_env, module_spawn, versions=1, events=2_000)
    serving = next(record for record in reversed(client.history("sea")) if not record.is_manual)
    return Deployment(module_driftline_env, client, serving)


@pytest.fixture(scope="module")
def scorer(deployment: Deployment, module_spawn: Callable) -> Iterator[tuple[Scoring, Path]]:
    """A scoring worker serving the trainer's version, and the path of its log."""
    process = module_spawn("score", "--config", "examples/sea.toml", name="scorer")
    scoring = Scoring(deployment.env)
    try:
        scoring.until_served_by(deployment.serving.version, timeout=60)
        yield scoring, Path(process.log_path)
        assert process.poll() is None, "the scorer stopped"
    finally:
        scoring.close()


def publish_bad_version(case: str, deployment: Deployment, marker: Path) -> ModelVersion:
    """Publish the next version of sea with an artifact that is bad as ``case`` says."""
    env = deployment.env
    version = max(record.version for record in deployment.client.history("sea")) + 1
    prefix, key = env["DRIFTLINE_REDIS_PREFIX"], env["DRIFTLINE_SIGNING_KEY"].encode()
    payload = CreatesFile(str(marker))
    signed_as = {"model": "sea", "version": version, "prefix": prefix, "key": key}
    if case == "wrong_signature":
        signed_as["key"] = b"another deployment's key"
    elif case == "another_models_artifact":
        signed_as["model"] = "fraud"
    if case == "altered_bytes":
        # Signed bytes of their own (so no other version's artifact is touched), then replaced.
        ref = Artifact.pack(f"sea v{version} as it was signed", **signed_as).ref
        stored: bytes | None = pickle.dumps(payload)
    else:
        artifact = Artifact.pack(payload, **signed_as)
        stored, ref = artifact.blob, artifact.ref
    if case == "missing_artifact":
        stored = None  # never stored, or deleted since: the same to a reader
    if stored is not None:
        store = redis.Redis.from_url(env["REDIS_URL"])
        store.set(ref.key, stored)
        store.close()
    return publish_hand_made_version(
        env, deployment.serving, version=version, artifact=ref, reason=f"hand-made: {case}"
    )


@pytest.mark.parametrize("case", REFUSALS)
def test_the_registry_client_refuses_it_without_unpickling(
    case: str, deployment: Deployment, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    published = publish_bad_version(case, deployment, marker)
    # As a reader sees it: read back from the registry topic.
    record = deployment.client.get("sea", published.version)
    assert record == published

    with pytest.raises(ArtifactIntegrityError, match=REFUSALS[case]):
        deployment.client.load(record)
    assert not marker.exists()
    # The version that serves still loads.
    assert deployment.client.load(deployment.serving).name == deployment.serving.candidate["name"]


@pytest.mark.parametrize("case", REFUSALS)
def test_a_scoring_worker_refuses_it_and_keeps_serving_its_version(
    case: str, deployment: Deployment, scorer: tuple[Scoring, Path], tmp_path: Path
) -> None:
    scoring, log = scorer
    marker = tmp_path / "unpickled"
    published = publish_bad_version(case, deployment, marker)

    refusal = f"refusing sea v{published.version} "
    line = wait_for(
        lambda: next((ln for ln in log.read_text().splitlines() if refusal in ln), None),
        timeout=30,
        what=f"the scorer to refuse v{published.version}",
    )
    assert re.search(REFUSALS[case], line), line
    assert not marker.exists()

    scored_before = len(scoring.predictions.read(0))
    scoring.send(30)
    after = scoring.all_scored()[scored_before:]
    assert len(after) >= 30
    assert {prediction["version"] for prediction in after} == {deployment.serving.version}
