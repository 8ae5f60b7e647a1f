"""Unit and property tests of the labeled/unlabeled event wire contract."""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contract import (
    InvalidEvent,
    LabeledEvent,
    ReasonCode,
    UnlabeledEvent,
    dead_letter_record,
    decode_dead_letter,
    decode_labeled,
    decode_unlabeled,
    encode_event,
    validate_labeled,
)

STREAMS = Path(__file__).resolve().parents[3] / "streams"


def labeled(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1",
        "model": "churn",
        "ts": 1_718_000_000.5,
        "features": {"age": 42, "income": 51_000.5, "plan": "pro", "trial": False, "x": None},
        "label": "churned",
    }
    event.update(overrides)
    return event


def without(event: dict[str, Any], field: str) -> dict[str, Any]:
    return {name: value for name, value in event.items() if name != field}


def code_of(raw: bytes | None, **kwargs: Any) -> str:
    with pytest.raises(InvalidEvent) as caught:
        decode_labeled(raw, **kwargs)
    return caught.value.code


# --- valid events -------------------------------------------------------------------


def test_decodes_a_valid_labeled_event() -> None:
    event = decode_labeled(orjson.dumps(labeled()))
    assert event == LabeledEvent(
        event_id="e-1",
        model="churn",
        ts=1_718_000_000.5,
        features={"age": 42, "income": 51_000.5, "plan": "pro", "trial": False, "x": None},
        label="churned",
    )


def test_unlabeled_event_needs_no_label_and_ignores_one() -> None:
    event = decode_unlabeled(orjson.dumps(without(labeled(), "label")))
    assert event == UnlabeledEvent("e-1", "churn", 1_718_000_000.5, labeled()["features"])
    assert decode_unlabeled(orjson.dumps(labeled())) == event


@pytest.mark.parametrize("label", ["yes", 3, True, False, 0.25, -7])
def test_label_may_be_a_class_or_a_number(label: object) -> None:
    decoded = decode_labeled(orjson.dumps(labeled(label=label))).label
    assert decoded == label
    assert type(decoded) is type(label)


def test_unknown_top_level_fields_are_ignored() -> None:
    event = decode_labeled(orjson.dumps(labeled(source="crm", version=2)))
    assert event == decode_labeled(orjson.dumps(labeled()))


def test_empty_features_are_allowed() -> None:
    assert decode_labeled(orjson.dumps(labeled(features={}))).features == {}


@pytest.mark.parametrize(
    ("ts", "epoch"),
    [
        (1_718_000_000, 1_718_000_000.0),
        (0, 0.0),
        ("2024-06-10T06:13:20Z", 1_718_000_000.0),
        ("2024-06-10T08:13:20+02:00", 1_718_000_000.0),
        ("2024-06-10T06:13:20.5", 1_718_000_000.5),  # no offset: UTC
    ],
)
def test_timestamps_become_epoch_seconds(ts: object, epoch: float) -> None:
    event = decode_labeled(orjson.dumps(labeled(ts=ts)))
    assert event.ts == epoch
    assert type(event.ts) is float


# --- rejections ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, ReasonCode.NOT_JSON),
        (b"", ReasonCode.NOT_JSON),
        (b"\xff\xfe{}", ReasonCode.NOT_JSON),
        (b'{"event_id": "e-1",', ReasonCode.NOT_JSON),
        (b"[1, 2]", ReasonCode.NOT_OBJECT),
        (b'"text"', ReasonCode.NOT_OBJECT),
        (b"null", ReasonCode.NOT_OBJECT),
    ],
)
def test_rejects_payloads_that_are_not_json_objects(raw: bytes | None, code: str) -> None:
    assert code_of(raw) == code


@pytest.mark.parametrize("field", ["event_id", "model", "ts", "features", "label"])
def test_rejects_missing_fields_and_names_them(field: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_labeled(orjson.dumps(without(labeled(), field)))
    assert caught.value.code == ReasonCode.MISSING_FIELD
    assert field in caught.value.reason


@pytest.mark.parametrize(
    ("overrides", "code", "named"),
    [
        ({"event_id": 7}, ReasonCode.WRONG_TYPE, "event_id"),
        ({"event_id": ""}, ReasonCode.EMPTY_FIELD, "event_id"),
        ({"model": None}, ReasonCode.WRONG_TYPE, "model"),
        ({"model": ""}, ReasonCode.EMPTY_FIELD, "model"),
        ({"ts": True}, ReasonCode.WRONG_TYPE, "ts"),
        ({"ts": [1]}, ReasonCode.WRONG_TYPE, "ts"),
        ({"ts": "yesterday"}, ReasonCode.BAD_TIMESTAMP, "ts"),
        ({"ts": 1_718_000_000_000}, ReasonCode.BAD_TIMESTAMP, "milliseconds"),
        ({"ts": -1}, ReasonCode.BAD_TIMESTAMP, "ts"),
        ({"features": [1, 2]}, ReasonCode.WRONG_TYPE, "features"),
        ({"features": None}, ReasonCode.WRONG_TYPE, "features"),
        ({"features": {"a": {"b": 1}}}, ReasonCode.WRONG_TYPE, "'a'"),
        ({"features": {"a": [1]}}, ReasonCode.WRONG_TYPE, "'a'"),
        ({"features": {"big": 2**64}}, ReasonCode.OUT_OF_RANGE, "'big'"),
        ({"label": None}, ReasonCode.WRONG_TYPE, "label"),
        ({"label": [1]}, ReasonCode.WRONG_TYPE, "label"),
        ({"label": {"a": 1}}, ReasonCode.WRONG_TYPE, "label"),
    ],
)
def test_rejects_mistyped_fields_and_names_them(
    overrides: dict[str, Any], code: str, named: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        validate_labeled(labeled(**overrides))
    assert caught.value.code == code
    assert named in caught.value.reason


@pytest.mark.parametrize(
    "overrides",
    [
        {"features": {"a": math.nan}},
        {"features": {"a": math.inf}},
        {"features": {"a": -math.inf}},
        {"label": math.nan},
        {"ts": math.inf},
        {"ts": math.nan},
    ],
)
def test_validation_rejects_non_finite_numbers(overrides: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent) as caught:
        validate_labeled(labeled(**overrides))
    assert caught.value.code == ReasonCode.NON_FINITE


@pytest.mark.parametrize(
    "literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"], ids=bytes.decode
)
@pytest.mark.parametrize("field", ["feature", "label"])
def test_decode_reports_nan_and_infinity_literals_as_non_finite(literal: bytes, field: str) -> None:
    # Literals a stdlib json.dumps(allow_nan=True) producer would emit.
    placeholder = 123456.789
    event = (
        labeled(features={"a": placeholder}) if field == "feature" else labeled(label=placeholder)
    )
    raw = orjson.dumps(event).replace(b"123456.789", literal)
    with pytest.raises(InvalidEvent) as caught:
        decode_labeled(raw)
    assert caught.value.code == ReasonCode.NON_FINITE


def test_feature_names_must_be_strings() -> None:
    with pytest.raises(InvalidEvent) as caught:
        validate_labeled(labeled(features={1: 2.0}))
    assert caught.value.code == ReasonCode.WRONG_TYPE


def test_feature_values_must_be_plain_builtin_scalars() -> None:
    class FloatSubclass(float):  # stands in for numpy.float64
        pass

    with pytest.raises(InvalidEvent) as caught:
        validate_labeled(labeled(features={"a": FloatSubclass(1.0)}))
    assert caught.value.code == ReasonCode.WRONG_TYPE
    assert "FloatSubclass" in caught.value.reason


def test_oversize_is_rejected_before_parsing() -> None:
    # Not even JSON: the size check must come first.
    assert code_of(b"x" * 101, max_bytes=100) == ReasonCode.OVERSIZE
    raw = orjson.dumps(labeled())
    assert decode_labeled(raw, max_bytes=len(raw)).event_id == "e-1"
    assert code_of(raw, max_bytes=len(raw) - 1) == ReasonCode.OVERSIZE


def test_invalid_event_carries_code_and_reason() -> None:
    error = InvalidEvent(ReasonCode.WRONG_TYPE, "model must be a string")
    assert isinstance(error, ValueError)
    assert str(error) == "wrong_type: model must be a string"
    # Workers may hand rejections across processes.
    copied = pickle.loads(pickle.dumps(error))
    assert (copied.code, copied.reason) == (error.code, error.reason)


def test_every_reason_code_keeps_its_json_value() -> None:
    # Dashboards and alerts match these strings: a rename is a breaking change.
    assert {code.name: code.value for code in ReasonCode} == {
        name.upper(): name
        for name in [
            *["not_json", "not_object", "missing_field", "wrong_type", "empty_field"],
            *["non_finite", "out_of_range", "oversize", "bad_timestamp"],
            *["unknown_model", "label_mismatch", "model_error", "no_version", "unverified_version"],
            *["key_mismatch", "wrong_partition", "no_prediction", "rejected"],
        ]
    }


def test_a_worker_code_is_a_reason_code_and_no_other_is_accepted() -> None:
    error = InvalidEvent("unknown_model", "model 'x' is not configured")
    assert error.code is ReasonCode.UNKNOWN_MODEL
    _, value = dead_letter_record(b"{}", error, topic="t", partition=0, offset=0, key=None)
    assert decode_dead_letter(value)["reason_code"] == "unknown_model"
    with pytest.raises(ValueError, match="unknown_modle"):
        InvalidEvent("unknown_modle", "a typo must not reach the dead-letter topic")


def test_every_code_the_workers_emit_is_listed() -> None:
    # Any InvalidEvent("code", ...) or InvalidEvent(ReasonCode.NAME, ...) in the sources.
    sources = "\n".join(path.read_text() for path in STREAMS.rglob("*.py"))
    literal = set(re.findall(r'InvalidEvent\(\s*"(\w+)"', sources))
    named = set(re.findall(r"InvalidEvent\(\s*ReasonCode\.(\w+)", sources))
    assert literal <= {code.value for code in ReasonCode}
    assert named <= set(ReasonCode.__members__)


# --- encoding -----------------------------------------------------------------------


def test_encode_validates_mappings() -> None:
    with pytest.raises(InvalidEvent):
        encode_event(without(labeled(), "label"))


def test_encode_normalises_timestamps_to_epoch_seconds() -> None:
    raw = encode_event(labeled(ts="2024-06-10T06:13:20Z"))
    assert orjson.loads(raw)["ts"] == 1_718_000_000.0


def test_unlabeled_event_encodes_without_label() -> None:
    event = decode_unlabeled(orjson.dumps(labeled()))
    assert "label" not in orjson.loads(encode_event(event))
    assert decode_unlabeled(encode_event(event)) == event


# --- dead letters -------------------------------------------------------------------


def test_dead_letter_keeps_original_bytes_and_source() -> None:
    raw = b'{"event_id": \xff broken'
    with pytest.raises(InvalidEvent) as caught:
        decode_labeled(raw)
    key, value = dead_letter_record(
        raw, caught.value, topic="driftline.events.labeled", partition=2, offset=41, key=b"churn"
    )
    assert key == b"driftline.events.labeled/2/41"
    record = decode_dead_letter(value)
    assert record["original"] == raw
    assert record["original_size"] == len(raw)
    assert record["reason_code"] == "not_json"
    assert record["reason"] == caught.value.reason
    assert record["source"] == {"topic": "driftline.events.labeled", "partition": 2, "offset": 41}
    assert record["key"] == "churn"


def test_dead_letter_accepts_plain_reasons_tombstones_and_binary_keys() -> None:
    _, value = dead_letter_record(
        None, "unknown model 'x'", topic="t", partition=0, offset=0, key=b"\xffx"
    )
    record = decode_dead_letter(value)
    assert record["reason_code"] == "rejected"
    assert record["reason"] == "unknown model 'x'"
    assert record["original"] is None
    assert record["key"] == "\\xffx"


@pytest.mark.parametrize("value", [b"nope", b"[]", b'{"reason": "x"}', b'{"original_b64": "@@@"}'])
def test_decode_dead_letter_rejects_other_records(value: bytes) -> None:
    with pytest.raises(InvalidEvent):
        decode_dead_letter(value)


# --- properties ---------------------------------------------------------------------

names = st.text(min_size=1, max_size=20)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
labels = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
valid_events = st.builds(
    LabeledEvent,
    event_id=names,
    model=names,
    ts=st.floats(min_value=0, max_value=1e11, exclude_max=True),
    features=st.dictionaries(st.text(max_size=20), scalars, max_size=12),
    label=labels,
)
json_values = st.recursive(
    scalars | st.just(math.nan) | st.just(math.inf),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


# The four bad-input properties below feed the decoder 4 x 2,500 = 10,000 generated bad events.
bad_input = settings(max_examples=2_500, deadline=None)


def decodes_or_rejects(raw: bytes, **kwargs: Any) -> None:
    """The contract's promise: a valid event or InvalidEvent, never another exception."""
    try:
        event = decode_labeled(raw, **kwargs)
    except InvalidEvent as error:
        assert error.code in set(ReasonCode)
        assert error.reason
    else:
        assert isinstance(event, LabeledEvent)
        assert decode_labeled(encode_event(event)) == event


@given(valid_events)
def test_valid_events_round_trip(event: LabeledEvent) -> None:
    assert decode_labeled(encode_event(event)) == event
    assert decode_labeled(encode_event(event.to_json_object())) == event


@bad_input
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_are_rejected(raw: bytes) -> None:
    decodes_or_rejects(raw)


@bad_input
@given(valid_events, st.data())
def test_truncated_events_are_rejected(event: LabeledEvent, data: st.DataObject) -> None:
    raw = encode_event(event)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    with pytest.raises(InvalidEvent):
        decode_labeled(raw[:cut])


@bad_input
@given(
    valid_events,
    st.sampled_from(["event_id", "model", "ts", "features", "label", "extra"]),
    json_values,
)
def test_any_field_replaced_by_any_json_decodes_or_is_rejected(
    event: LabeledEvent, field: str, replacement: object
) -> None:
    obj = event.to_json_object()
    obj[field] = replacement
    # Through the validator, which sees NaN/inf as floats, and through bytes written by
    # stdlib json, which spells them as NaN/Infinity literals (orjson would write null).
    with contextlib.suppress(InvalidEvent):
        validate_labeled(obj)
    decodes_or_rejects(json.dumps(obj).encode())


@bad_input
@given(valid_events, st.sampled_from(["event_id", "model", "ts", "features", "label"]))
def test_missing_fields_are_rejected(event: LabeledEvent, field: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_labeled(orjson.dumps(without(event.to_json_object(), field)))
    assert caught.value.code == ReasonCode.MISSING_FIELD


@given(valid_events, st.integers(min_value=0, max_value=50))
def test_size_limit_is_exact(event: LabeledEvent, slack: int) -> None:
    raw = encode_event(event)
    decodes_or_rejects(raw, max_bytes=len(raw) + slack)
    with pytest.raises(InvalidEvent) as caught:
        decode_labeled(raw, max_bytes=len(raw) - 1)
    assert caught.value.code == ReasonCode.OVERSIZE
