"""Configuration mistakes are one-line errors naming their cause: file, variable, closest name."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import ConfigFileError, load_config
from trainers.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "streams" / "examples" / "sea.toml"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("partitions", "abc", r"\[worker\] partitions must be a positive integer, got 'abc'"),
        ("partitions", "0", r"\[worker\] partitions must be a positive integer, got 0"),
        ("partitions", "true", r"\[worker\] partitions must be a positive integer, got True"),
        ("checkpoint_interval", "-1", r"checkpoint_interval must be a positive number"),
        ("group", "''", r"group must be a non-empty string"),
        ("partitons", "8", r"unknown \[worker\] setting 'partitons' \(did you mean 'partitions'"),
    ],
)
def test_a_bad_worker_override_names_its_variable(variable, value, message):
    name = f"DRIFTLINE__worker__{variable}"
    with pytest.raises(ConfigFileError, match=message) as caught:
        load_config(EXAMPLE, {name: value})
    assert f"(from the environment: {name}={value})" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_worker_values_in_the_file_name_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(EXAMPLE.read_text() + "\n[worker]\nsession_timeout = 'soon'\n")
    with pytest.raises(ConfigFileError, match="session_timeout must be a positive number") as e:
        load_config(path, {})
    assert str(path) in str(e.value) and "environment" not in str(e.value)


def test_good_worker_values_keep_their_types():
    config = load_config(EXAMPLE, {"DRIFTLINE__worker__session_timeout": "3"})
    assert config.worker.session_timeout == 3.0 and isinstance(config.worker.session_timeout, float)


def test_an_override_cannot_add_a_model_and_suggests_the_declared_one():
    with pytest.raises(ConfigFileError, match=r"no model 'sae' \(did you mean 'sea'\?\)") as e:
        load_config(EXAMPLE, {"DRIFTLINE__models__sae__window": "500"})
    assert "DRIFTLINE__models__sae__window=500" in str(e.value)


def test_a_model_error_from_an_override_names_the_variable_and_only_it():
    environ = {"DRIFTLINE__models__sea__window": "-1", "DRIFTLINE__models__sea__champion": "agile"}
    with pytest.raises(ConfigError, match="window: must be a positive integer") as caught:
        load_config(EXAMPLE, environ)
    assert "DRIFTLINE__models__sea__window=-1" in str(caught.value)
    assert "champion=" not in str(caught.value)


def test_an_unknown_section_is_refused_with_the_closest_name(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text(EXAMPLE.read_text().replace("[models.sea]", "[models.sea]\n[wokrer]\n", 1))
    with pytest.raises(ConfigFileError, match=r"unknown section 'wokrer' \(did you mean 'worker'"):
        load_config(path, {})


@pytest.mark.parametrize(
    ("wrong", "right"),
    [
        ('river = "StandardScaler | LogisticRegression"', "LogisticRegresion"),
        ('river = "StandardScaler | LogisticRegression"', "StandrdScaler"),
    ],
)
def test_a_misspelt_river_class_gets_a_suggestion(tmp_path, wrong, right):
    typo = (
        wrong.replace("LogisticRegression", right)
        if "Logistic" in right
        else wrong.replace("StandardScaler", right)
    )
    path = tmp_path / "typo.toml"
    path.write_text(EXAMPLE.read_text().replace(wrong, typo))
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    message = str(caught.value)
    expected = "LogisticRegression" if "Logistic" in right else "StandardScaler"
    assert message.count(f"did you mean {expected!r}?") == 1, message
    assert "\n" not in message


def test_a_misspelt_sklearn_class_gets_a_suggestion(tmp_path):
    path = tmp_path / "sk.yaml"
    path.write_text(
        "models:\n  m:\n    task: classification\n    candidates:\n"
        "      - {name: sgd, sklearn: SGDClasifier, classes: [0, 1]}\n"
    )
    with pytest.raises(ConfigError, match=r"did you mean 'SGDClassifier'\?"):
        load_config(path, {})


def test_invalid_yaml_is_reported_on_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  m: [\n")
    with pytest.raises(ConfigFileError, match="is not valid YAML") as caught:
        load_config(path, {})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("aff", r"\[redis\] durability must be one of \['none', 'replica', 'aof'\], got 'aff' "
         r"\(did you mean 'aof'\?\)"),
        ("3", r"\[redis\] durability must be a non-empty string, got 3"),
    ],
)  # fmt: skip
def test_a_bad_durability_names_the_levels_and_its_variable(value, message):
    name = "DRIFTLINE__redis__durability"
    with pytest.raises(ConfigFileError, match=message) as caught:
        load_config(EXAMPLE, {name: value})
    assert f"(from the environment: {name}={value})" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_durability_is_none_unless_set_and_read_from_the_file_or_the_environment(tmp_path):
    assert load_config(EXAMPLE, {}).redis.wait.level == "none"
    path = tmp_path / "durable.toml"
    path.write_text(EXAMPLE.read_text() + '\n[redis]\ndurability = "replica"\n')
    assert load_config(path, {}).redis.wait.level == "replica"
    assert load_config(path, {"DRIFTLINE__redis__durability": "aof"}).redis.durability == "aof"
    path.write_text(EXAMPLE.read_text() + '\n[redis]\ndurabilty = "aof"\n')
    with pytest.raises(ConfigFileError, match=r"'durabilty' \(did you mean 'durability'\?\)"):
        load_config(path, {})
