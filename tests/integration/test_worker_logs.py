"""What a worker's log says at the default level, written to a file as in production."""

from __future__ import annotations

import re
import signal

import pytest
from pipeline import Deployment, encoded, sea_events, wait_for

pytestmark = pytest.mark.timeout(300)


def _read(process) -> str:
    with open(process.log_path, errors="replace") as log:
        return log.read()


def test_the_log_says_what_happens_once_not_per_event(driftline_env, spawn):
    env = {**driftline_env, "DRIFTLINE__worker__progress_interval": "1"}
    deployment = Deployment(env)
    events = sea_events(4_000, drift_at=2_000)
    keyed_elsewhere = [(b"other", value) for _, value in encoded(events[:200])]
    bad = [(b"sea", b"not json")] * 300 + keyed_elsewhere
    worker = spawn("worker", "--config", "examples/sea.toml", env=env, name="trainer")
    deployment.send_raw([*encoded(events[:2_000]), *bad, *encoded(events[2_000:])])
    deployment.wait_until_learned("sea", len(events))
    wait_for(lambda: "dead letters" in _read(worker), timeout=30, what="a progress line")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0

    log = _read(worker)
    assert re.search(r"ready: group \S+, consuming \S+events\.labeled", log)
    assert "assigned partitions [0, 1, 2, 3]" in log
    assert re.search(r"published sea v1 \(steady\)", log)
    assert re.search(r"progress: \d+ events learned", log)
    dead = re.findall(r"(not_json|key_mismatch) (\d+)", log)
    assert sum(int(n) for reason, n in dead if reason == "not_json") == 300
    assert sum(int(n) for reason, n in dead if reason == "key_mismatch") == 200
    assert "final checkpoint saved" in log
    assert "\x1b[" not in log, "terminal escape codes in a log file"
    assert "dead letter " not in log, "one line per dead letter"
    assert "GroupCoordinatorNotAvailableError" not in log
    assert len(log.splitlines()) < 60, log
