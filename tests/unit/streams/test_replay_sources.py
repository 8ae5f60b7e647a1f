"""Event sources of ``driftline produce``: files, bundled datasets, drift streams, pacing."""

from __future__ import annotations

import orjson
import pytest

from streams.contract import validate_labeled
from streams.sdk import replay


def test_csv_rows_become_events_with_typed_features(tmp_path):
    path = tmp_path / "fraud.csv"
    path.write_text("amount,country,is_fraud\n12.5,FR,1\n,DE,0\n")
    events = list(replay.from_file(path, model="fraud", label="is_fraud"))
    assert [e["event_id"] for e in events] == ["fraud-0", "fraud-1"]
    assert events[0]["features"] == {"amount": 12.5, "country": "FR"}
    assert events[1]["features"] == {"amount": None, "country": "DE"}
    assert [e["label"] for e in events] == [1, 0]
    assert all(validate_labeled(e) for e in events)


def test_json_lines_take_whole_events_or_flat_rows(tmp_path):
    path = tmp_path / "mixed.jsonl"
    whole = {"event_id": "e-9", "ts": 5, "features": {"x": 1.0}, "label": True}
    path.write_text(orjson.dumps(whole).decode() + "\n\n" + '{"x": 2.0, "label": false}\n')
    first, second = replay.from_file(path, model="m")
    assert (first["event_id"], first["model"], first["ts"]) == ("e-9", "m", 5)
    assert second["features"] == {"x": 2.0}
    assert second["label"] is False


def test_bundled_dataset_needs_no_download():
    first = next(replay.from_dataset("Phishing", model="phish"))
    assert first["model"] == "phish" and first["features"]
    with pytest.raises(ValueError, match="bundled"):
        next(replay.from_dataset("CreditCard", model="x"))


def test_drift_stream_is_deterministic_per_seed():
    def take(seed):
        return [
            (e["features"], e["label"])
            for e in replay.from_drift("sea", model="sea", events=50, drift_at=25, seed=seed)
        ]

    assert take(1) == take(1) != take(2)


def test_paced_events_follow_the_rate():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 9))
        now[0] += seconds

    events = list(replay.paced(range(10), rate=100, limit=5, clock=lambda: now[0], sleep=sleep))
    assert events == [0, 1, 2, 3, 4]
    assert slept == [0.01] * 4
    assert list(replay.paced(range(3), rate=None, clock=lambda: 0.0, sleep=sleep)) == [0, 1, 2]
    assert len(slept) == 4
