"""Worker configuration files: TOML or YAML, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streams.config import ConfigFileError, load_config
from streams.settings import SettingsError
from streams.workers.app import WorkerApp

EXAMPLE = Path(__file__).parents[3] / "examples" / "sea.toml"


def test_the_shipped_example_loads():
    config = load_config(EXAMPLE, {})
    assert config.models["sea"].task == "classification"
    assert [c["name"] for c in config.models["sea"].candidates] == ["steady", "agile"]
    assert config.topics.labeled == "driftline.events.labeled"


def test_yaml_with_typed_environment_overrides(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "worker": {"partitions": 2},
                "models": {
                    "m": {
                        "task": "regression",
                        "candidates": [{"name": "lin", "river": "LinearRegression"}],
                    }
                },
            }
        )
    )
    env = {
        "DRIFTLINE__worker__partitions": "8",
        "DRIFTLINE__worker__checkpoint_interval": "0.5",
        "DRIFTLINE__models__m__window": "250",
        "DRIFTLINE_TOPIC_PREFIX": "staging.",
    }
    config = load_config(path, env)
    assert config.worker.partitions == 8
    assert config.worker.checkpoint_interval == 0.5
    assert config.models["m"].window == 250
    assert config.topics.registry == "staging.models.registry"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[worker]\npartitions = 2\n", "declares no models"),
        ("[worker]\nspeed = 2\n[models.m]\ntask = 'regression'\n", "unknown \\[worker\\]"),
        ("[models.m\n", "not valid TOML"),
    ],
)
def test_bad_files_are_named_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=message):
        load_config(path, {})


def test_a_missing_file_is_a_named_error(tmp_path):
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_config(tmp_path / "absent.toml", {})


def test_a_configuration_file_error_is_a_settings_error():
    # One ``except SettingsError`` in a command refuses every configuration problem.
    assert issubclass(ConfigFileError, SettingsError)


def test_a_worker_instance_id_from_the_environment_makes_the_consumer_a_static_member():
    assert load_config(EXAMPLE, {}).worker.instance_id == ""
    config = load_config(EXAMPLE, {"DRIFTLINE__worker__instance_id": "trainer-0"})
    app = WorkerApp("group", config, {"bootstrap_servers": "localhost:9092"}, outputs=()).app
    assert app.conf.consumer_group_instance_id == "trainer-0"
