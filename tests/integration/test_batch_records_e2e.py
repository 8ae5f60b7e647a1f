"""Batch records on the real broker: a bad event inside a batch is dead-lettered alone, with its
index, and every other event of the batch is learned, exactly as the in-process trainer would."""

from __future__ import annotations

import base64

import orjson
import pytest
from pipeline import Deployment, sea_events
from registry_helpers import TopicReader

from streams.contract import encode_batch, encode_event, event_position

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BATCH = 50


def test_bad_events_inside_batches_are_dead_lettered_alone_with_their_index(driftline_env, spawn):
    deployment = Deployment(driftline_env)
    good = sea_events(2_000, drift_at=1_000)
    # Every batch but the first holds one bad event at a different index, and the last record
    # is refused whole (an empty batch).
    records: list[tuple[bytes, bytes]] = []
    bad: dict[tuple[int, int], bytes] = {}
    for offset, start in enumerate(range(0, len(good), BATCH)):
        values = [encode_event(event) for event in good[start : start + BATCH]]
        if offset:
            index = offset % (BATCH + 1)
            wrong = orjson.dumps({**good[start], "event_id": f"bad-{offset}", "label": [1]})
            values.insert(index, wrong)
            bad[offset, index] = wrong
        records.append((b"sea", encode_batch(values)))
    records.append((b"sea", b"[]"))
    dead_letters = TopicReader(driftline_env, deployment.topics.dlq)
    spawn("worker", "--config", "examples/sea.toml", name="trainer")
    deployment.send_raw(records)

    trainer = deployment.wait_until_learned("sea", len(good))
    assert trainer.learned == {"steady": len(good), "agile": len(good)}
    letters = dead_letters.wait_until(
        lambda letters: len(letters) >= len(bad) + 1, timeout=60, what="every dead letter"
    )
    dead_letters.close()
    by_coordinate = {
        (letter["source"]["offset"], letter["source"].get("index")): letter for letter in letters
    }
    assert len(by_coordinate) == len(letters) == len(bad) + 1
    whole = by_coordinate.pop((len(records) - 1, None))
    assert whole["reason_code"] == "empty_field"
    assert set(by_coordinate) == set(bad)
    for coordinate, letter in by_coordinate.items():
        assert letter["reason_code"] == "wrong_type"
        assert base64.b64decode(letter["original_b64"]) == bad[coordinate]
    partition = whole["source"]["partition"]  # the one the key "sea" hashes to
    last_offset, last_index = len(records) - 2, BATCH
    assert trainer.last_position(f"{deployment.topics.labeled}[{partition}]") == event_position(
        last_offset, last_index
    )
