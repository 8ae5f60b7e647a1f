"""The secured stack's configuration: ACLs per role, broker settings, the compose override that
must say the same, client-side diagnosis of TLS failures, and who signs a manual record.

TLS failures are checked against a real TLS listener (Python's ``ssl``, on loopback) serving
certificates made by :func:`streams.stack.security.issue_certificates`: the client code path is
the one a broker would exercise, and the secured broker itself is covered in
tests/integration/test_secure_stack.py.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.registry.records import ArtifactRef, ModelVersion, RecordKind, manual_record
from streams.settings import authenticated_principal
from streams.stack.broker import connection_problem, server_properties
from streams.stack.security import (
    BROKER_USER,
    StackSecrets,
    issue_certificates,
    role_acls,
    secure_server_properties,
)
from streams.topics import Topics

REPO = Path(__file__).resolve().parents[3]
TOPICS = Topics.from_prefix()
GRANTS = role_acls(
    TOPICS, trainer_group="driftline-trainer", scorer_group="driftline-trainer-scorer"
)

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def allowed(principal: str, operation: str) -> set[str]:
    return {
        grant.name
        for grant in GRANTS
        if grant.principal == f"User:{principal}"
        and grant.operation == operation
        and grant.resource == "TOPIC"
    }


def test_only_trainers_scorers_and_operators_write_the_registry() -> None:
    writers = {g.principal for g in GRANTS if g.name == TOPICS.registry and g.operation == "WRITE"}
    assert writers == {"User:trainer", "User:scorer", "User:operator"}


def test_producers_write_the_event_topics_and_nothing_else() -> None:
    assert allowed("producer", "WRITE") == {TOPICS.labeled, TOPICS.unlabeled, TOPICS.outcomes}
    assert allowed("producer", "READ") == set()


def test_each_worker_reads_what_it_consumes_in_its_own_group() -> None:
    assert allowed("trainer", "READ") == {
        TOPICS.labeled, TOPICS.unlabeled, TOPICS.outcomes, TOPICS.registry, TOPICS.dlq,
    }  # fmt: skip
    # A worker reads back its own outputs past its checkpoint's mark, so as not to publish twice.
    assert {TOPICS.dlq, TOPICS.predictions} <= allowed("scorer", "READ")
    assert TOPICS.predictions in allowed("scorer", "WRITE")
    assert TOPICS.predictions not in allowed("trainer", "WRITE")
    groups = {(g.principal, g.name) for g in GRANTS if g.resource == "GROUP"}
    assert groups == {
        ("User:trainer", "driftline-trainer"),
        ("User:scorer", "driftline-trainer-scorer"),
    }


def test_the_secured_broker_has_no_plaintext_client_listener(tmp_path: Path) -> None:
    secrets = StackSecrets(tmp_path)
    tmp_path.joinpath(f"{BROKER_USER}.password").write_text("pw\n")
    properties = server_properties(
        host="127.0.0.1",
        port=1,
        controller_port=2,
        data_dir=tmp_path,
        security=secure_server_properties(secrets),
    )
    settings = dict(line.split("=", 1) for line in properties.splitlines())
    assert settings["listeners"] == "SECURE://127.0.0.1:1,CONTROLLER://127.0.0.1:2"
    assert settings["listener.security.protocol.map"] == "SECURE:SASL_SSL,CONTROLLER:SASL_PLAINTEXT"
    assert settings["super.users"] == "User:broker"
    assert settings["auto.create.topics.enable"] == "false"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.secure.yml").read_text())


def image_env_name(setting: str) -> str:
    """The apache/kafka image's variable for a broker setting: ``_`` doubled, ``-`` tripled."""
    return "KAFKA_" + setting.replace("_", "__").replace("-", "___").replace(".", "_").upper()


def test_compose_configures_the_broker_as_the_local_secured_stack(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    tmp_path.joinpath(f"{BROKER_USER}.password").write_text("pw\n")
    local = secure_server_properties(StackSecrets(tmp_path))
    env = compose["services"]["kafka"]["environment"]
    for setting, value in local.items():
        name = image_env_name(setting)
        assert name in env, f"{name} missing"
        if setting.startswith("ssl.") and setting.endswith(".location"):
            continue  # paths differ: /secure in the containers
        if "jaas" in setting:
            assert f'username="{BROKER_USER}"' in env[name]
            continue
        if setting == "listener.security.protocol.map":
            # The same listeners, plus EXTERNAL (SASL_SSL too) for the host.
            assert env[name] == f"{value},EXTERNAL:SASL_SSL"
            continue
        assert str(env[name]) == value, name


def test_compose_gives_each_worker_its_own_user_and_no_more(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for role in ("trainer", "scorer", "producer"):
        env = services[role]["environment"]
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["KAFKA_SASL_PLAIN_USERNAME"] == role
        assert f"DRIFTLINE_{role.upper()}_PASSWORD" in env["KAFKA_SASL_PLAIN_PASSWORD"]
    for role in ("trainer", "scorer"):
        assert services[role]["environment"]["REDIS_URL"].startswith(f"rediss://{role}:")
    assert services["producer"]["environment"]["REDIS_URL"] == ""
    assert services["producer"]["environment"]["DRIFTLINE_SIGNING_KEY"] == ""
    redis = services["redis"]["command"][0]
    assert "--port 0 --tls-port 6379" in redis and "user default off" in redis


def test_compose_grants_the_registry_to_the_same_roles(compose: dict[str, Any]) -> None:
    script = compose["services"]["kafka-acls"]["command"][0]
    grants = [line.split() for line in script.splitlines() if line.strip().startswith("acl ")]
    writers = {words[1] for words in grants if "Write" in words and "$${t}models.registry" in words}
    assert writers == {"trainer", "scorer", "operator"}
    assert [words for words in grants if words[1] == "producer"] == [
        ["acl", "producer", "--operation", "Write", "--operation", "Describe", '"$${events[@]}"']
    ]


@contextlib.contextmanager
def tls_listener(certificate: Path, key: Path) -> Iterator[str]:
    """A loopback TLS server presenting ``certificate``; yields ``host:port``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError), context.wrap_socket(connection, server_side=True):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        server.close()


@needs_openssl
@pytest.mark.parametrize(
    ("days", "trusted", "cause"),
    [(-1, True, "it has expired"), (30, False, "it is not signed by a trusted CA")],
)
def test_a_refused_broker_certificate_is_named(
    tmp_path: Path, days: int, trusted: bool, cause: str
) -> None:
    issue_certificates(tmp_path, hosts=["127.0.0.1"], days=days)
    other = tmp_path / "other"
    other.mkdir()
    issue_certificates(other, hosts=["127.0.0.1"], days=30)
    ca = tmp_path / "ca.pem" if trusted else other / "ca.pem"
    with tls_listener(tmp_path / "broker.crt", tmp_path / "broker.key") as address:
        problem = connection_problem(
            address,
            timeout_ms=1000,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username="operator",
            sasl_plain_password="s3cret-password",
            ssl_cafile=str(ca),
        )
    assert problem is not None
    assert cause in problem
    assert "s3cret-password" not in problem


@needs_openssl
def test_a_client_certificate_names_its_subject_as_kafka_does(tmp_path: Path) -> None:
    issue_certificates(tmp_path, hosts=["127.0.0.1"], days=1)
    kafka = {"security_protocol": "SSL", "ssl_certfile": str(tmp_path / "broker.crt")}
    assert authenticated_principal(kafka) == "CN=driftline-broker"


TARGET = ModelVersion(
    model="m",
    version=1,
    kind=RecordKind.INITIAL,
    candidate={"name": "c", "params": {}},
    previous_version=None,
    reason="r",
    evidence={},
    lineage={},
    artifact=ArtifactRef(key="k", sha256="0", size=1, signature="s"),
)


def test_operator_verified_is_signed_and_absent_from_older_records() -> None:
    record = manual_record(
        TARGET,
        kind=RecordKind.MANUAL,
        previous_version=1,
        reason="r",
        operator="operator",
        operator_verified=True,
    ).signed(b"key")
    parsed = ModelVersion.from_json(record.to_json())
    parsed.verify(b"key")
    assert parsed.operator_verified is True
    forged = ModelVersion.from_json(
        record.to_json().replace(b'"operator_verified":true', b'"operator_verified":false')
    )
    with pytest.raises(Exception, match="bad signature"):
        forged.verify(b"key")
    # A trainer's record, and any record written before the field, carries no such key.
    assert b"operator_verified" not in TARGET.signed(b"key").to_json()
    ModelVersion.from_json(TARGET.signed(b"key").to_json()).verify(b"key")
