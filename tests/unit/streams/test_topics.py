"""Unit tests of the topic names derived from the deployment prefix."""

from __future__ import annotations

import pytest

from streams.topics import Topics


def test_default_prefix_gives_the_documented_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLINE_TOPIC_PREFIX", raising=False)
    assert Topics.from_env() == Topics(
        labeled="driftline.events.labeled",
        unlabeled="driftline.events.unlabeled",
        outcomes="driftline.events.outcomes",
        dlq="driftline.events.dlq",
        registry="driftline.models.registry",
        predictions="driftline.predictions",
        metrics="driftline.models.metrics",
    )


def test_prefix_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_TOPIC_PREFIX", "test-42.")
    assert Topics.from_env().dlq == "test-42.events.dlq"
    assert Topics.from_env({"DRIFTLINE_TOPIC_PREFIX": "x."}).registry == "x.models.registry"
