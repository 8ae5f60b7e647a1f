"""A scorer started with another signing key than the trainer's says so once, and its dead
letters name the cause (``unverified_version``), not a missing version."""

from __future__ import annotations

import pytest
from pipeline import wait_for
from registry_helpers import (
    Scoring,
    TopicReader,
    client_for,
    start_sea_training,
    wait_for_records,
)

from streams.topics import Topics

pytestmark = pytest.mark.timeout(240)

UNSCORED = 30


def _log(process) -> str:
    with open(process.log_path, errors="replace") as handle:
        return handle.read()


def test_a_scorer_with_the_wrong_key_names_the_version_it_cannot_verify(driftline_env, spawn):
    start_sea_training(spawn, events=2_000)  # v1 alone, signed with the deployment's key
    wait_for_records(client_for(driftline_env), "sea", 1)
    wrong_key = {**driftline_env, "DRIFTLINE_SIGNING_KEY": "not-the-trainer-key"}
    # A short wait: the scorer gives up on the model after it, and dead-letters its events.
    scorer = spawn(
        "score", "--config", "examples/sea.toml", "--max-wait", "2", env=wrong_key, name="scorer"
    )
    scoring = Scoring(driftline_env)
    dead_letters = TopicReader(
        driftline_env, Topics.from_prefix(wrong_key["DRIFTLINE_TOPIC_PREFIX"]).dlq
    )
    try:
        scoring.send(UNSCORED)
        letters = dead_letters.wait_until(
            lambda records: len(records) >= UNSCORED, timeout=90, what="a dead letter per event"
        )
        assert scoring.predictions.read(0.5) == [], "an unverified version served"
    finally:
        scoring.close()
        dead_letters.close()

    assert {letter["reason_code"] for letter in letters} == {"unverified_version"}
    assert all("cannot verify sea v1" in letter["reason"] for letter in letters)
    assert all("DRIFTLINE_SIGNING_KEY" in letter["reason"] for letter in letters)
    log = wait_for(
        lambda: "cannot verify sea v1" in (text := _log(scorer)) and text,
        timeout=10,
        what="the refusal in the scorer's log",
    )
    assert log.count("cannot verify sea v1: not signed with this") == 1, log
    assert "Traceback" not in log
