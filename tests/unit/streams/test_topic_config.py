"""Topic settings: the ``[topics.<group>]`` tables, their defaults against the cluster, and the
start check of a labeled topic against where the registry's versions were learned (no broker)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streams.admin import (
    TopicError,
    TopicGroup,
    TopicSettings,
    key_partition,
    learned_partition_problems,
)
from streams.config import ConfigFileError, load_config
from streams.workers.app import WorkerApp

EXAMPLE = Path(__file__).parents[3] / "examples" / "sea.toml"
LABELED = "dl.events.labeled"


def _topics(**environ: str) -> TopicSettings:
    return load_config(
        EXAMPLE, {f"DRIFTLINE__topics__{k}": v for k, v in environ.items()}
    ).topic_settings


@pytest.mark.parametrize(
    ("brokers", "replicas", "insync"), [(1, 1, 1), (2, 2, 2), (3, 3, 2), (6, 3, 2)]
)
def test_defaults_follow_the_cluster(brokers: int, replicas: int, insync: int) -> None:
    resolved = TopicSettings().resolved(brokers)
    for group in ("events", "outcomes", "predictions", "registry", "dead_letters", "internal"):
        assert resolved.group(group) == TopicGroup(replicas, insync), group


def test_given_settings_are_kept_and_the_rest_resolved() -> None:
    settings = _topics(registry__replication_factor="3", events__min_insync_replicas="1")
    resolved = settings.resolved(5)
    assert resolved.group("registry") == TopicGroup(3, 2)
    assert resolved.group("events") == TopicGroup(3, 1)
    assert resolved.group("metrics") == TopicGroup(3, 2)


def test_a_min_isr_above_the_default_replication_factor_is_refused_at_start() -> None:
    settings = _topics(registry__min_insync_replicas="2")
    assert settings.resolved(3).group("registry") == TopicGroup(3, 2)
    with pytest.raises(TopicError) as caught:
        settings.resolved(1)
    assert str(caught.value).startswith(
        "topics.registry.min_insync_replicas=2 is above the replication factor of the model "
        "registry (1, the default: min(3, brokers), and the cluster has 1)"
    )


def test_partitions_default_to_the_worker_setting_and_outcomes_follow_the_events() -> None:
    config = load_config(EXAMPLE, {"DRIFTLINE__worker__partitions": "6"})
    settings = config.topic_settings
    assert [settings.partitions_of(g) for g in ("events", "outcomes", "predictions")] == [6, 6, 6]
    assert [settings.partitions_of(g) for g in ("registry", "dead_letters", "metrics")] == [1] * 3
    assert _topics(predictions__partitions="2").partitions_of("predictions") == 2


def test_the_events_partitions_of_topics_are_the_workers_too(tmp_path: Path) -> None:
    config = load_config(EXAMPLE, {"DRIFTLINE__topics__events__partitions": "8"})
    assert config.topic_settings.partitions == config.worker.partitions == 8
    path = tmp_path / "both.toml"
    path.write_text(EXAMPLE.read_text() + "\n[topics.events]\npartitions = 2\n")
    assert load_config(path, {"DRIFTLINE__worker__partitions": "2"}).worker.partitions == 2


def test_the_retention_comes_from_the_worker_table() -> None:
    config = load_config(EXAMPLE, {"DRIFTLINE__worker__event_retention": "1d"})
    assert config.topic_settings.event_retention_ms == 86_400_000


def test_a_yaml_file_takes_topic_tables(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        "topics:\n  registry: {replication_factor: 3, min_insync_replicas: 2}\n"
        "models:\n  m:\n    task: regression\n"
        "    candidates: [{name: lin, river: LinearRegression}]\n"
    )
    assert load_config(path, {}).topic_settings.group("registry") == TopicGroup(3, 2)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "registry__partitions",
            "3",
            r"\[topics.registry\] partitions cannot be set: the registry is one partition",
        ),
        ("dead_letters__partitions", "3", r"\[topics.dead_letters\] partitions cannot be set"),
        ("metrics__partitions", "3", r"\[topics.metrics\] partitions cannot be set"),
        ("internal__partitions", "3", r"\[topics.internal\] partitions cannot be set: faust"),
        ("internal__min_insync_replicas", "2", r"min_insync_replicas cannot be set: faust"),
        (
            "regsitry__replication_factor",
            "3",
            r"unknown topic group \[topics.regsitry\] \(did you mean 'registry'\?\)",
        ),
        (
            "events__replicaton_factor",
            "3",
            r"unknown \[topics.events\] setting 'replicaton_factor' "
            r"\(did you mean 'replication_factor'\?\)",
        ),
        (
            "events__replication_factor",
            "0",
            r"replication_factor must be a positive integer, got 0",
        ),
        ("outcomes__min_insync_replicas", "two", r"must be a positive integer, got 'two'"),
        ("events", "3", r"\[topics.events\] must be a table"),
        (
            "outcomes__partitions",
            "2",
            r"\[topics.outcomes\] partitions = 2 differs from the events' 4: the scorer joins",
        ),
    ],
)
def test_a_bad_topic_override_names_its_variable(variable: str, value: str, message: str) -> None:
    name = f"DRIFTLINE__topics__{variable}"
    with pytest.raises(ConfigFileError, match=message) as caught:
        load_config(EXAMPLE, {name: value})
    assert f"(from the environment: {name}={value})" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_min_isr_above_the_replication_factor_in_the_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "isr.toml"
    path.write_text(
        EXAMPLE.read_text()
        + "\n[topics.registry]\nreplication_factor = 2\nmin_insync_replicas = 3\n"
    )
    with pytest.raises(ConfigFileError) as caught:
        load_config(path, {})
    assert str(caught.value) == (
        f"{path}: [topics.registry] min_insync_replicas = 3 is above its replication_factor = 2: "
        "no write would ever be acknowledged"
    )


def test_two_partition_counts_of_the_events_are_refused() -> None:
    environ = {"DRIFTLINE__topics__events__partitions": "8", "DRIFTLINE__worker__partitions": "4"}
    with pytest.raises(ConfigFileError, match=r"partitions = 8 and \[worker\] partitions = 4"):
        load_config(EXAMPLE, environ)


def test_the_worker_app_gives_faust_the_internal_replication_factor_and_no_leader_topic() -> None:
    config = load_config(EXAMPLE, {"DRIFTLINE__topics__internal__replication_factor": "2"})
    resolved = dataclasses.replace(config, topic_settings=config.topic_settings.resolved(3))
    app = WorkerApp("group", resolved, {"bootstrap_servers": "localhost:9092"}, outputs=()).app
    assert app.conf.topic_replication_factor == 2
    assert app.conf.topic_disable_leader is True


def _models_on(partition: int, partitions: int, count: int) -> list[str]:
    """``count`` model names whose key maps to ``partition`` of ``partitions``."""
    names = (f"model-{i}" for i in range(10_000))
    return [n for n in names if key_partition(n, partitions) == partition][:count]


def _lineage(source: str) -> dict[str, object]:
    return {"format": 1, "source": source, "first_offset": 0, "last_offset": 9, "events": 10}


def test_a_model_whose_key_moved_to_another_partition_is_named_with_the_earlier_count() -> None:
    moved = next(n for n in _models_on(1, 4, 50) if key_partition(n, 8) != 1)
    stayed = next(n for n in _models_on(2, 4, 50) if key_partition(n, 8) == 2)
    lineages = [
        (moved, _lineage(f"{LABELED}[1]")),
        (stayed, _lineage(f"{LABELED}[2]")),
        (moved, {"format": 1, "source": None, "events": 0}),  # a notice before learning
    ]
    assert learned_partition_problems(LABELED, lineages, partitions=4) == []
    (problem,) = learned_partition_problems(LABELED, lineages, partitions=8)
    now = key_partition(moved, 8)
    assert f"{moved} was learned from {LABELED}[1], its events now go to [{now}]" in problem
    assert stayed not in problem
    assert problem.startswith(f"topic {LABELED} has 8 partitions, other than when")
    assert "with the count it had (it had " in problem and "4)" in problem
    assert "\n" not in problem


def test_only_the_given_models_and_the_labeled_topic_count() -> None:
    moved = next(n for n in _models_on(1, 4, 50) if key_partition(n, 8) != 1)
    lineages = [(moved, _lineage(f"{LABELED}[1]"))]
    assert learned_partition_problems(LABELED, lineages, partitions=8, models={"other"}) == []
    other_topic = [(moved, _lineage("elsewhere.events.labeled[1]"))]
    assert learned_partition_problems(LABELED, other_topic, partitions=8) == []


def test_the_last_record_of_a_model_says_where_it_learns() -> None:
    model = next(n for n in _models_on(1, 4, 50) if key_partition(n, 8) != 1)
    now = key_partition(model, 8)
    ranges = {"format": 1, "events": 5, "ranges": [{"source": f"{LABELED}[{now}]"}]}
    lineages = [(model, _lineage(f"{LABELED}[1]")), (model, ranges)]
    assert learned_partition_problems(LABELED, lineages, partitions=8) == []
