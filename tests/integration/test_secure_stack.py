"""Every client against a secured stack (``driftline stack up --secure``): Kafka over SASL_SSL
with a SCRAM user per role and KRaft's StandardAuthorizer, Redis over TLS with ACL users.

One secured stack serves the module (certificates and users are made once). Each role's process
gets exactly the environment file ``stack up --secure`` wrote for it, so the tests use what a
user would.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from pipeline import wait_for
from registry_helpers import unlabeled_sea_events

from streams.registry.client import RegistryClient
from streams.sdk.producer import DeliveryError, EventProducer
from streams.settings import Settings, kafka_ssl_context
from streams.stack import LocalStack, broker
from streams.stack.process import is_alive
from streams.stack.security import ROLES, CertificateExpiredError, issue_certificates
from streams.topics import Topics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("secure-stack"))
    try:
        stack.up(secure=True)
    except Exception as error:
        stack.down()
        message = f"could not start the secured stack: {error}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield stack
    stack.down()


def role_env(stack: LocalStack, role: str) -> dict[str, str]:
    """The variables of ``role``'s environment file (its ``export`` lines)."""
    env = {}
    for line in stack.secrets.env_file(role).read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    return env


def secrets_of(stack: LocalStack) -> list[str]:
    return [stack.secrets.password(user) for user in (*ROLES, "broker")]


@pytest.fixture(scope="module")
def deployment(secure_stack: LocalStack) -> Callable[[str], dict[str, str]]:
    """The environment of each role for one deployment of this module: its own topics, group
    and Redis keys (under the stack's ``driftline:`` prefix, the one its ACL users may use),
    with the topics created and the ACLs granted."""
    token = os.urandom(4).hex()
    shared = {
        "DRIFTLINE_TOPIC_PREFIX": f"secure-{token}.",
        "DRIFTLINE_REDIS_PREFIX": f"driftline:{token}:",
        "DRIFTLINE__worker__group": f"secure-trainer-{token}",
        "DRIFTLINE__worker__checkpoint_interval": "0.5",
    }
    secure_stack.grant(
        Topics.from_prefix(shared["DRIFTLINE_TOPIC_PREFIX"]),
        trainer_group=shared["DRIFTLINE__worker__group"],
    )
    base = {name: value for name, value in os.environ.items() if not _is_deployment(name)}
    return lambda role: {**base, **role_env(secure_stack, role), **shared}


def _is_deployment(name: str) -> bool:
    return name.startswith(("KAFKA_", "REDIS_", "DRIFTLINE_"))


@pytest.fixture(scope="module")
def secure_spawn(
    deployment: Callable[[str], dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., object]]:
    from conftest import _driftline_processes

    with _driftline_processes(deployment("trainer"), tmp_path_factory.mktemp("logs")) as start:
        yield start


def registry_client(env: dict[str, str]) -> RegistryClient:
    return RegistryClient(settings=Settings.from_env(env))


def logs_of(processes: list) -> str:
    return "".join(Path(process.log_path).read_text(errors="replace") for process in processes)


def test_every_client_trains_scores_and_promotes_over_tls_and_scram(
    secure_stack, deployment, secure_spawn, driftline_cli
):
    trainer = secure_spawn("worker", "--config", "examples/sea.toml", name="trainer")
    scorer = secure_spawn(
        "score", "--config", "examples/sea.toml", env=deployment("scorer"), name="scorer"
    )
    # The kafka-python SDK, as the producer: labeled events for the trainer, unlabeled ones to
    # score.
    produced = driftline_cli(
        "produce", "--synthetic", "sea", "--events", "40000", "--quiet", env=deployment("producer")
    )
    assert produced.returncode == 0, produced.stderr
    scored = driftline_cli(
        "produce", "--synthetic", "sea", "--unlabeled", "--events", "300", "--quiet",
        env=deployment("producer"),
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr

    # The registry client (kafka-python) as the operator sees the faust trainer's versions...
    operator = registry_client(deployment("operator"))
    # The SEA story: v1 after the warm-up, a challenger after the concept switch.
    history = wait_for(
        lambda: len(h := operator.history("sea")) >= 2 and h, timeout=120, what="two versions"
    )
    # ...loads one from Redis over TLS as its ACL user (redis-py)...
    assert operator.load(history[0]) is not None
    # ...and rolls back: the record names the principal the broker authenticated.
    record = operator.rollback("sea", to=history[0].version, reason="secured stack test")
    assert (record.operator, record.operator_verified) == ("operator", True)
    assert record in operator.history("sea")

    # The faust scorer read the registry and wrote predictions; an aiokafka consumer reads them
    # as the broker's own user (no role reads predictions: downstream systems would get one).
    predictions = asyncio.run(read_all(secure_stack, deployment, "predictions", at_least=300))
    assert {prediction["model"] for prediction in predictions} == {"sea"}

    for process in (trainer, scorer):
        assert process.poll() is None, f"{process.log_path} exited"
    output = logs_of([trainer, scorer]) + produced.stderr + scored.stderr
    assert not [secret for secret in secrets_of(secure_stack) if secret in output]


async def read_all(
    stack: LocalStack, deployment: Callable[[str], dict[str, str]], topic: str, *, at_least: int
) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    admin = stack.admin_settings()
    env = deployment("operator")
    consumer = AIOKafkaConsumer(
        getattr(Topics.from_prefix(env["DRIFTLINE_TOPIC_PREFIX"]), topic),
        bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        security_protocol="SASL_SSL",
        sasl_mechanism=admin["sasl_mechanism"],
        sasl_plain_username=admin["sasl_plain_username"],
        sasl_plain_password=admin["sasl_plain_password"],
        ssl_context=kafka_ssl_context(admin),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[dict] = []
    try:
        async with asyncio.timeout(90):
            while len(records) < at_least:
                batches = await consumer.getmany(timeout_ms=1000)
                records += [orjson.loads(m.value) for batch in batches.values() for m in batch]
    finally:
        await consumer.stop()
    return records


def test_the_broker_refuses_a_producer_writing_the_registry(
    secure_stack, deployment, driftline_cli
):
    # Even with the signing key (leaked, say), a producer principal cannot touch the registry:
    # the broker's ACLs, not the key, decide who writes it.
    env = {
        **deployment("producer"),
        "DRIFTLINE_SIGNING_KEY_FILE": str(secure_stack.signing_key_file),
    }
    settings = Settings.from_env(env)
    event = next(iter(unlabeled_sea_events()))
    with EventProducer(settings=settings, topic=settings.topics.registry) as producer:
        producer.send(event)
        with pytest.raises(DeliveryError, match=r"TopicAuthorizationFailed.*models\.registry"):
            producer.flush(timeout=30)

    promoted = driftline_cli("registry", "rollback", "sea", "--to", "1", "--reason", "x", env=env)
    assert promoted.returncode == 2
    lines = promoted.stderr.strip().splitlines()
    assert len(lines) == 1, promoted.stderr
    assert "TopicAuthorizationFailed" in lines[0] and "models.registry" in lines[0], lines[0]


def test_the_broker_refuses_an_operator_writing_events(secure_stack, deployment):
    from kafka import KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError

    settings = Settings.from_env(deployment("operator"))
    producer = KafkaProducer(acks="all", **settings.kafka)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(settings.topics.labeled, b"{}").get(timeout=30)
    finally:
        producer.close()


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ({"KAFKA_SASL_PLAIN_PASSWORD": "not-the-password"}, "refused the SASL login of user"),
        ("untrusted CA", "not signed by a trusted CA"),
    ],
)
def test_a_bad_credential_is_named_and_no_secret_shown(
    secure_stack, deployment, driftline_cli, tmp_path, change, cause
):
    env = deployment("operator")
    if change == "untrusted CA":
        issue_certificates(tmp_path, hosts=["127.0.0.1"], days=30)
        env["KAFKA_SSL_CAFILE"] = str(tmp_path / "ca.pem")
    else:
        env.update(change)
    listed = driftline_cli("registry", "ls", env=env)
    assert listed.returncode == 2
    assert cause in listed.stderr, listed.stderr
    shown = listed.stdout + listed.stderr
    assert not [
        secret for secret in [*secrets_of(secure_stack), "not-the-password"] if secret in shown
    ]


def test_an_expired_broker_certificate_is_named(secure_stack, tmp_path):
    secrets = secure_stack.secrets
    kept = tmp_path / "kept"
    kept.mkdir()
    for path in (secrets.broker_keystore, secrets.broker_certificate, secrets.broker_key):
        shutil.copy(path, kept / path.name)
    issue_certificates(tmp_path, hosts=["127.0.0.1"], days=-1, ca=secrets.folder)
    secure_stack.stop_service("kafka")
    try:
        shutil.copy(tmp_path / "broker.crt", secrets.broker_certificate)
        with pytest.raises(CertificateExpiredError, match=r"broker certificate .* has expired"):
            secure_stack.start_service("kafka")
        # Kafka itself refuses to serve it: it checks its certificate chain at start.
        keystore = (tmp_path / "broker.key").read_text() + (tmp_path / "broker.crt").read_text()
        secrets.broker_keystore.write_text(keystore)
        pid = broker.start(broker.BrokerLayout(Path(secure_stack.state_dir / "kafka")))
        log = secure_stack.state_dir / "kafka" / "broker.log"
        wait_for(lambda: not is_alive(pid), timeout=60, what="the broker to refuse its certificate")
        assert "validity check failed" in log.read_text()
    finally:
        for path in (secrets.broker_keystore, secrets.broker_certificate, secrets.broker_key):
            shutil.copy(kept / path.name, path)
        secure_stack.start_service("kafka")
