"""The same events give the same artifact bytes in every process, whatever PYTHONHASHSEED is.

Each kind of the allowlists is learned by a `ModelTrainer` in subprocesses that differ only by
their hash seed, and the sha256 of its artifact compared. Candidates that draw
from an unseeded random generator cannot be reproduced: they are the ones
`trainers.lineage.nondeterminism` names, so that their records say ``verifiable: false``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from trainers.candidates import SKLEARN_ESTIMATORS, SKLEARN_WINDOW_ESTIMATORS
from trainers.lineage import nondeterminism
from trainers.spec import ModelSpec

pytestmark = pytest.mark.slow

# Each river module of the allowlist, seeded where the estimator takes a seed.
RIVER = {
    "classification": [
        "naive_bayes.GaussianNB",
        "StandardScaler | LogisticRegression",
        "linear_model.Perceptron",
        "tree.HoeffdingTreeClassifier",
        ("tree.HoeffdingAdaptiveTreeClassifier", {"seed": 3}),
        ("forest.ARFClassifier", {"seed": 3, "n_models": 3}),
    ],
    "regression": [
        "StandardScaler | LinearRegression",
        "tree.HoeffdingTreeRegressor",
        ("forest.ARFRegressor", {"seed": 3, "n_models": 3}),
    ],
}
UNSEEDED = [
    ({"name": "knn", "river": "neighbors.KNNClassifier"}, "classification"),
    ({"name": "hat", "river": "tree.HoeffdingAdaptiveTreeClassifier"}, "classification"),
    ({"name": "sgd", "sklearn": "SGDClassifier", "classes": [False, True]}, "classification"),
]
STREAM = {"classification": "sea", "regression": "friedman"}

LEARN = """
import hashlib, json, sys
from trainers.serialization import canonical_dumps
from trainers.spec import ModelSpec
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

digests = {}
for table, stream in json.loads(sys.argv[1]):
    trainer = ModelTrainer(ModelSpec.from_dict("m", table))
    for position, (x, y) in enumerate(drift_stream(stream, n=700, drift_at=350, seed=5)):
        trainer.learn(x, y, source="s", position=position)
    # What a promotion would serve now: the candidate as it learned, pickled as an artifact.
    (name,) = trainer.learned
    digests[name] = hashlib.sha256(canonical_dumps(trainer.candidate(name))).hexdigest()
print(json.dumps(digests))
"""


def allowlisted() -> list[tuple[dict, str]]:
    """One candidate of every kind of the allowlists, with its task."""
    kinds: list[tuple[dict, str]] = []
    for task, estimators in RIVER.items():
        for entry in estimators:
            river, params = entry if isinstance(entry, tuple) else (entry, {})
            kinds.append(({"name": river, "river": river, "params": params}, task))
    for estimator, (_, task) in SKLEARN_ESTIMATORS.items():
        spec = {"name": estimator, "sklearn": estimator, "params": {"random_state": 0}}
        if task == "classification":
            spec["classes"] = [False, True]
        if estimator in ("MultinomialNB", "BernoulliNB"):
            del spec["params"]["random_state"]
        kinds.append((spec, task))
    for estimator, (_, task) in SKLEARN_WINDOW_ESTIMATORS.items():
        kinds.append(({"name": f"window {estimator}", "sklearn_window": estimator}, task))
    return kinds


def model_table(candidate: dict, task: str) -> dict:
    return {"task": task, "candidates": [candidate]}


def test_every_allowlisted_kind_gives_the_same_bytes_under_any_hash_seed():
    kinds = allowlisted()
    argument = json.dumps([(model_table(c, task), STREAM[task]) for c, task in kinds])
    seeds = random.sample(range(1, 2**32 - 1), 2)
    runs = []
    for seed in seeds:
        learned = subprocess.run(
            [sys.executable, "-c", LEARN, argument],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        runs.append(json.loads(learned.stdout))
    assert sorted(runs[0]) == sorted(c["name"] for c, _ in kinds)
    differing = [name for name in runs[0] if runs[0][name] != runs[1][name]]
    assert not differing, f"PYTHONHASHSEED {seeds} give other bytes for {differing}"
    for candidate, task in kinds:
        assert nondeterminism(ModelSpec.from_dict("m", model_table(candidate, task))) == []


@pytest.mark.parametrize(("candidate", "task"), UNSEEDED, ids=lambda value: str(value)[:40])
def test_unseeded_random_candidates_are_named_unverifiable(candidate, task):
    spec = ModelSpec.from_dict("m", model_table(candidate, task))
    assert nondeterminism(spec) == [
        f"candidate {candidate['name']!r} is random and unseeded "
        f"({'seed' if 'river' in candidate else 'random_state'}=None): give it a "
        f"{'seed' if 'river' in candidate else 'random_state'}"
    ]
