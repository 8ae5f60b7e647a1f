"""Static group membership on the real broker: a trainer worker killed and restarted under the
same ``[worker] instance_id`` gets its partitions back at once, not after ``session_timeout``,
and learns every event exactly once across the kill."""

from __future__ import annotations

import signal

import pytest
from pipeline import Deployment, sea_events

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Far longer than the restart may take: a successor that had to wait for the group to drop its
# killed predecessor (dynamic membership) could not learn before this.
SESSION_TIMEOUT = 90


def test_a_worker_restarted_under_its_instance_id_resumes_before_its_session_expires(
    driftline_env, spawn
):
    env = {
        **driftline_env,
        "DRIFTLINE__worker__instance_id": "trainer-0",
        "DRIFTLINE__worker__session_timeout": str(SESSION_TIMEOUT),
    }
    deployment = Deployment(env)
    events = sea_events(3_000, drift_at=1_500)
    first = spawn("worker", "--config", "examples/sea.toml", env=env, name="trainer")
    deployment.send_batched(events[:2_000])
    deployment.wait_until_learned("sea", 2_000)

    first.send_signal(signal.SIGKILL)
    first.wait()
    spawn("worker", "--config", "examples/sea.toml", env=env, name="successor")
    deployment.send_batched(events[2_000:])
    trainer = deployment.wait_until_learned("sea", len(events), timeout=SESSION_TIMEOUT - 30)

    assert trainer.learned == {"steady": len(events), "agile": len(events)}
