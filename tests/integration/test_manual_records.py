"""An operator's rollback is obeyed by the trainer, which goes on learning behind it."""

from __future__ import annotations

import pytest
from pipeline import Deployment, encoded, sea_events, wait_for

pytestmark = pytest.mark.timeout(300)


def test_trainer_adopts_a_rollback_and_keeps_learning(driftline_env, spawn, driftline_cli):
    deployment = Deployment(driftline_env)
    spawn("worker", "--config", "examples/sea.toml", name="trainer")
    events = sea_events(60_000, drift_at=20_000)
    deployment.send_raw(encoded(events[:40_000]))
    deployment.wait_until_learned("sea", 40_000)
    versions = wait_for(
        lambda: len(v := deployment.registry()) >= 2 and v, timeout=30, what="two versions"
    )
    assert [(v.version, v.candidate["name"]) for v in versions] == [(1, "steady"), (2, "agile")]

    rollback = driftline_cli(
        "registry",
        "rollback",
        "sea",
        "--to",
        "1",
        "--reason",
        "v2 misbehaves downstream",
        env={**driftline_env, "DRIFTLINE_OPERATOR": "alice"},
        timeout=60,
    )
    assert rollback.returncode == 0, rollback.stderr
    trainer = wait_for(
        lambda: (t := deployment.trainers()["sea"]).champion_version == 1 and t,
        timeout=30,
        what="the trainer to adopt the rollback",
    )
    assert trainer.champion == "steady"
    assert trainer.version == 2  # a rollback issues no version number
    assert "rollback by alice" in trainer.champion_reason

    # The rollback stands in the audit log, and the trainer keeps learning with challengers
    # evaluated against the adopted champion (that a better one then replaces it is shown in
    # tests/unit/trainers/test_model_trainer.py: on this stream "agile" is no better by the
    # margin once "steady" has relearned).
    deployment.send_raw(encoded(events[40_000:]))
    trainer = deployment.wait_until_learned("sea", 60_000)
    records = deployment.registry()
    manual = records[2]
    assert (manual.kind, manual.version, manual.operator) == ("rollback", 1, "alice")
    assert manual.previous_version == 2
    assert all(r.previous_version == 1 for r in records[3:])
    assert trainer.learned == {"steady": 60_000, "agile": 60_000}
    if len(records) == 3:
        assert (trainer.champion, trainer.champion_version) == ("steady", 1)
