"""A running worker fed 10,000 generated bad events: it never crashes, each bad event lands in
the dead-letter topic with its reason, and every good event around them is learned."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer
from pipeline import Deployment, encoded, sea_events, wait_for

from streams.contract import decode_dead_letter

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

GOOD = sea_events(2_000, drift_at=1_000)
TEMPLATE = GOOD[0]
INT64 = st.integers(-(2**63), 2**63 - 1)
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    INT64,
    st.text(max_size=8),
    st.lists(INT64, max_size=3),
    st.dictionaries(st.text(max_size=4), INT64, max_size=2),
)


def _event(**changes: object) -> dict:
    return {**TEMPLATE, **changes}


def _without(field: str) -> dict:
    return {k: v for k, v in TEMPLATE.items() if k != field}


bad_records = st.one_of(
    st.binary(max_size=120).filter(lambda raw: not raw.startswith(b"{")),
    st.integers(min_value=1, max_value=len(orjson.dumps(TEMPLATE)) - 1).map(
        lambda cut: orjson.dumps(TEMPLATE)[:cut]
    ),
    st.sampled_from(["event_id", "model", "ts", "features", "label"]).map(
        lambda field: orjson.dumps(_without(field))
    ),
    st.tuples(st.sampled_from(["event_id", "model", "features"]), JSON_VALUES)
    .filter(lambda pair: not (pair[0] in ("event_id", "model") and isinstance(pair[1], str)))
    .filter(lambda pair: not (pair[0] == "features" and isinstance(pair[1], dict)))
    .map(lambda pair: orjson.dumps(_event(**{pair[0]: pair[1]}))),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"]).map(
        lambda literal: orjson.dumps(_event(features={"x0": 0.0})).replace(b"0.0", literal.encode())
    ),
    st.text(min_size=1, max_size=10)
    .filter(lambda name: name != "sea")
    .map(lambda name: orjson.dumps(_event(model=name))),
    st.floats(allow_nan=False, allow_infinity=False)
    .filter(lambda x: not x.is_integer())
    .map(lambda label: orjson.dumps(_event(label=label))),
)

generated: list[bytes] = []


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(st.lists(bad_records, min_size=100, max_size=100))
def _generate(batch: list[bytes]) -> None:
    generated.extend(batch)


def test_ten_thousand_bad_events_never_stop_the_worker(driftline_env, spawn):
    while len(generated) < 10_000:  # hypothesis may stop a run early; ask for more
        _generate()
    bad = generated[:10_000]
    bad += [orjson.dumps(_event(features={"x0": "y" * 1_010_000}))] * 3  # over 1 MB
    assert len(bad) >= 10_000
    deployment = Deployment(driftline_env)
    records = list(encoded(GOOD))
    stride = len(bad) // len(records) + 1
    mixed: list[tuple[bytes, bytes]] = []
    for index, good in enumerate(records):
        mixed += [(b"sea", raw) for raw in bad[index * stride : (index + 1) * stride]]
        mixed.append(good)
    worker = spawn("worker", "--config", "examples/sea.toml", name="trainer")
    deployment.send_raw(mixed)

    trainer = deployment.wait_until_learned("sea", len(GOOD), timeout=300)
    assert worker.poll() is None
    assert trainer.learned == {"steady": len(GOOD), "agile": len(GOOD)}
    letters = wait_for(
        lambda: len(d := _dead_letters(deployment)) >= len(bad) and d, timeout=60, what="DLQ"
    )
    assert len(letters) == len(bad)
    assert sorted(letter["original"] for letter in letters) == sorted(bad)
    assert all(letter["reason"] and letter["reason_code"] for letter in letters)
    assert not any(math.isnan(letter["source"]["offset"]) for letter in letters)


def _dead_letters(deployment: Deployment) -> list[dict]:
    consumer = KafkaConsumer(
        deployment.topics.dlq,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3_000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        **deployment.kafka,
    )
    try:
        return [decode_dead_letter(record.value) for record in consumer]
    finally:
        consumer.close()
