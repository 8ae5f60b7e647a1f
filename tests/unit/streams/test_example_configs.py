"""The example configurations: each loads, builds, ships as package data and tells its story.

``driftline demo --config examples/NAME.toml`` runs any of them; the end-to-end runs are in
tests/integration/test_demo_examples.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli.demo import EXAMPLES
from streams.cli.main import SYNTHETIC_STREAMS, build_parser
from streams.config import load_config
from trainers.synthetic import KINDS, drift_stream
from trainers.trainer import ModelTrainer

REPO_EXAMPLES = Path(__file__).parents[3] / "examples"
CONFIGS = sorted(REPO_EXAMPLES.glob("*.toml"))


def test_there_are_the_sea_drift_actions_and_regression_examples() -> None:
    assert {path.name for path in CONFIGS} >= {"sea.toml", "drift_actions.toml", "regression.toml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_an_example_is_the_package_data_the_installed_demo_finds(path: Path) -> None:
    # examples/ links to the package's copies, which an installed driftline (the image) has.
    assert path.is_symlink()
    assert path.resolve() == (EXAMPLES / path.name).resolve()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_an_example_loads_and_every_model_builds(path: Path) -> None:
    config = load_config(path, environ={})
    assert config.models
    for spec in config.models.values():
        trainer = ModelTrainer(spec)
        assert trainer.report()["events"] == 0


def test_the_drift_actions_example_has_a_detector_actions_and_a_window_refit() -> None:
    spec = load_config(REPO_EXAMPLES / "drift_actions.toml", environ={}).models["sea_drift"]
    assert spec.drift is not None
    assert set(spec.drift.actions) == {"reset", "refit", "shorten_cooldown"}
    assert any("sklearn_window" in candidate for candidate in spec.candidates)


def test_the_regression_example_is_compared_on_mae() -> None:
    spec = load_config(REPO_EXAMPLES / "regression.toml", environ={}).models["friedman"]
    assert (spec.task, spec.policy.metric) == ("regression", "mae")


def test_the_drift_actions_story_a_drift_its_actions_then_the_reset_copy_promoted() -> None:
    spec = load_config(REPO_EXAMPLES / "drift_actions.toml", environ={}).models["sea_drift"]
    trainer = ModelTrainer(spec)
    events, drift_at = 9_000, 5_000
    promotions, notices = [], []
    for position, (x, y) in enumerate(drift_stream("sea", events, drift_at, seed=42)):
        promotion = trainer.learn(x, y, source="sea", position=position)
        notices += trainer.take_notices()
        if promotion is not None:
            promotions.append(promotion)

    drift = next(notice for notice in notices if notice.kind == "drift")
    assert drift_at < drift.lineage["event"] <= drift_at + 500, drift
    actions = [n for n in notices if n.kind == "action" and n.evidence["cause"] == drift.sequence]
    assert {a.evidence["action"] for a in actions} == {"reset", "refit", "shorten_cooldown"}
    assert not any(a.evidence["suppressed"] for a in actions)
    reset = next(a for a in actions if a.evidence["action"] == "reset")
    after = [p for p in promotions if p.lineage["last_offset"] >= drift_at]
    assert after and after[0].candidate == reset.candidate, promotions


def test_the_cli_offers_every_synthetic_stream() -> None:
    assert SYNTHETIC_STREAMS == KINDS
    args = build_parser().parse_args(
        ["demo", "--config", "examples/regression.toml", "--stream", "friedman"]
    )
    assert (args.config, args.stream) == (Path("examples/regression.toml"), "friedman")
    assert build_parser().parse_args(["demo"]).stream is None
