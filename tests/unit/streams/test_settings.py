"""One Settings object from the environment: what it holds, what it refuses, what it never shows."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from streams.settings import Settings, SettingsError

FULL = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "PLAIN",
    "KAFKA_SASL_PLAIN_USERNAME": "alice",
    "KAFKA_SASL_PLAIN_PASSWORD": "kafka-s3cret",
    "REDIS_URL": "redis://:redis-s3cret@redis:6379/0",
    "DRIFTLINE_REDIS_PREFIX": "staging:",
    "DRIFTLINE_TOPIC_PREFIX": "staging.",
    "DRIFTLINE_SIGNING_KEY": "key-s3cret",
}


def test_everything_a_deployment_needs_from_one_environment():
    settings = Settings.from_env(FULL)
    assert settings.kafka == {
        "bootstrap_servers": "kafka:9092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "kafka-s3cret",
    }
    assert settings.redis_url == "redis://:redis-s3cret@redis:6379/0"
    assert settings.redis_prefix == "staging:"
    assert settings.topics.registry == "staging.models.registry"
    assert settings.signing_key() == b"key-s3cret"


def test_the_defaults_of_a_bare_environment():
    settings = Settings.from_env({})
    assert settings.redis_prefix == "driftline:"
    assert settings.topics.labeled == "driftline.events.labeled"


@pytest.mark.parametrize(
    ("read", "message"),
    [
        (lambda s: s.kafka, "KAFKA_BOOTSTRAP_SERVERS is not set"),
        (lambda s: s.redis_url, "REDIS_URL is not set"),
        (lambda s: s.signing_key(), "no signing key .* DRIFTLINE_SIGNING_KEY_FILE"),
    ],
)
def test_a_missing_setting_is_refused_by_name_only_when_asked_for(read, message):
    settings = Settings.from_env({})  # no error yet: not every command needs everything
    with pytest.raises(SettingsError, match=message):
        read(settings)


def test_a_malformed_setting_is_refused_up_front():
    with pytest.raises(SettingsError, match="KAFKA_SSL_CHECK_HOSTNAME must be true or false"):
        Settings.from_env({"KAFKA_SSL_CHECK_HOSTNAME": "maybe"})


def test_the_signing_key_from_the_environment_or_a_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert Settings.from_env({"DRIFTLINE_SIGNING_KEY": "from-env"}).signing_key() == b"from-env"
    from_file = Settings.from_env({"DRIFTLINE_SIGNING_KEY_FILE": str(key_file)})
    assert from_file.signing_key() == b"from-file"
    missing = Settings.from_env({"DRIFTLINE_SIGNING_KEY_FILE": str(tmp_path / "absent")})
    with pytest.raises(SettingsError, match="cannot read DRIFTLINE_SIGNING_KEY_FILE"):
        missing.signing_key()
    key_file.write_text("  \n")
    with pytest.raises(SettingsError, match="no signing key"):
        from_file.signing_key()


def test_callers_may_change_the_kafka_settings_they_get():
    settings = Settings.from_env(FULL)
    settings.kafka.pop("bootstrap_servers")
    assert settings.kafka["bootstrap_servers"] == "kafka:9092"


def test_settings_are_frozen_and_never_show_a_secret():
    settings = Settings.from_env(FULL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.redis_prefix = "other:"  # type: ignore[misc]
    shown = repr(settings)
    assert "staging:" in shown
    assert all(secret not in shown for secret in ("kafka-s3cret", "redis-s3cret", "key-s3cret"))


def test_the_admin_clients_debug_log_of_its_configuration_shows_no_password(caplog):
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    secret = "not-for-any-log"
    with caplog.at_level(logging.DEBUG, logger="kafka"), pytest.raises(KafkaError):
        KafkaAdminClient(
            bootstrap_servers="127.0.0.1:1",
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username="trainer",
            sasl_plain_password=secret,
            api_version_auto_timeout_ms=200,
        )
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "'sasl_plain_password': '***'" in logged
    assert secret not in logged
