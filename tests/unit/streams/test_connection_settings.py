"""Connection settings from the environment reach every client: kafka-python, faust, Redis."""

from __future__ import annotations

import ssl

import faust
import pytest
import redis
import redis.asyncio as aioredis
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import AuthProtocol

from streams.sdk.producer import EventProducer
from streams.settings import Settings, SettingsError, faust_broker_options, redacted_url

BOOTSTRAP = {"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9093,kafka-2:9093"}
SASL_PLAIN = {
    **BOOTSTRAP,
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_MECHANISM": "PLAIN",
    "KAFKA_SASL_PLAIN_USERNAME": "alice",
    "KAFKA_SASL_PLAIN_PASSWORD": "s3cret",
}


def kafka_of(env: dict[str, str]) -> dict:
    return Settings.from_env(env).kafka


def ca_file() -> str:
    """A real PEM bundle of CA certificates (certifi's)."""
    return pytest.importorskip("certifi").where()


def test_the_environment_becomes_kafka_python_keyword_arguments():
    env = {
        **SASL_PLAIN,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem",
        "KAFKA_SSL_CHECK_HOSTNAME": "false",
        "KAFKA_UNRELATED": "ignored",
        "REDIS_URL": "redis://ignored",
    }
    assert kafka_of(env) == {
        "bootstrap_servers": "kafka-1:9093,kafka-2:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/kafka/ca.pem",
        "ssl_check_hostname": False,  # a boolean: the string "false" would be truthy
    }


def test_a_boolean_setting_that_is_not_one_is_refused():
    with pytest.raises(SettingsError, match="KAFKA_SSL_CHECK_HOSTNAME must be true or false"):
        kafka_of({**BOOTSTRAP, "KAFKA_SSL_CHECK_HOSTNAME": "maybe"})


def test_the_producer_sdk_takes_every_security_setting():
    settings = Settings.from_env({**SASL_PLAIN, "KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem"})
    # The constructor checks the names and connects later.
    producer = EventProducer(settings=settings)
    producer.close()


def test_plaintext_gives_faust_every_bootstrap_server_and_no_credentials():
    assert faust_broker_options(kafka_of(BOOTSTRAP)) == {
        "broker": ["kafka://kafka-1:9093", "kafka://kafka-2:9093"]
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_without_tls_gives_faust_sasl_credentials(mechanism):
    env = {**SASL_PLAIN, "KAFKA_SASL_MECHANISM": mechanism}
    credentials = faust_broker_options(kafka_of(env))["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_PLAINTEXT
    assert (credentials.username, credentials.password) == ("alice", "s3cret")
    assert credentials.mechanism.value == mechanism
    assert credentials.ssl_context is None
    assert "s3cret" not in repr(credentials)
    # What faust hands aiokafka's consumer and producer.
    assert credentials_to_aiokafka_auth(credentials) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "alice",
        "sasl_plain_password": "s3cret",
        "ssl_context": None,
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_sasl_over_tls_verifies_the_broker_with_the_given_ca_file(mechanism):
    env = {
        **SASL_PLAIN,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SSL_CAFILE": ca_file(),
    }
    credentials = faust_broker_options(kafka_of(env))["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_SSL
    context = credentials.ssl_context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # the file's CAs, loaded
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SASL_SSL"


def test_tls_without_a_ca_file_trusts_the_system_cas():
    options = faust_broker_options(kafka_of({**BOOTSTRAP, "KAFKA_SECURITY_PROTOCOL": "SSL"}))
    credentials = options["broker_credentials"]
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol is AuthProtocol.SSL
    assert credentials.context.verify_mode == ssl.CERT_REQUIRED
    assert credentials.context.check_hostname
    assert credentials.context.minimum_version >= ssl.TLSVersion.TLSv1_2
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth == {"security_protocol": "SSL", "ssl_context": credentials.context}


def test_tls_hostname_checking_can_be_turned_off_as_for_kafka_python():
    env = {
        **BOOTSTRAP,
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CAFILE": ca_file(),
        "KAFKA_SSL_CHECK_HOSTNAME": "false",
    }
    context = faust_broker_options(kafka_of(env))["broker_credentials"].context
    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED  # the certificate is still verified


def test_a_faust_app_takes_the_options():
    app = faust.App("connection-settings-test", **faust_broker_options(kafka_of(SASL_PLAIN)))
    assert [str(url) for url in app.conf.broker] == ["kafka://kafka-1:9093", "kafka://kafka-2:9093"]
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"KAFKA_SASL_MECHANISM": ""}, "needs KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SASL_MECHANISM": "OAUTHBEARER"}, "needs KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_TLS"}, "is not one of PLAINTEXT"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
            "cannot set up TLS",
        ),
    ],
)
def test_security_settings_faust_cannot_use_are_refused_by_name(overrides, message):
    with pytest.raises(SettingsError, match=message):
        faust_broker_options(kafka_of({**SASL_PLAIN, **overrides}))


def test_gssapi_gives_faust_kerberos_credentials():
    env = {
        **BOOTSTRAP,
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "GSSAPI",
        "KAFKA_SASL_KERBEROS_SERVICE_NAME": "kafka-prod",
    }
    credentials = faust_broker_options(kafka_of(env))["broker_credentials"]
    assert isinstance(credentials, faust.GSSAPICredentials)
    assert credentials.kerberos_service_name == "kafka-prod"


@pytest.mark.parametrize(
    ("client_class", "tls_connection", "plain_connection"),
    [
        (redis.Redis, redis.SSLConnection, redis.Connection),
        (aioredis.Redis, aioredis.SSLConnection, aioredis.Connection),
    ],
)
def test_a_rediss_url_gives_a_tls_connection(client_class, tls_connection, plain_connection):
    # Both clients driftline builds (the scorer's and registry client's, the trainer's asyncio
    # one) come from ``from_url`` with REDIS_URL as it is.
    tls = client_class.from_url("rediss://:pw@redis.example:6380/0")
    assert tls.connection_pool.connection_class is tls_connection
    plain = client_class.from_url("redis://localhost:6379/0")
    assert plain.connection_pool.connection_class is plain_connection


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://user:s3cret@host:6380/1", "rediss://user:***@host:6380/1"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_a_redacted_url_shows_no_password(url, shown):
    assert redacted_url(url) == shown
