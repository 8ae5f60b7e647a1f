"""Secrets come from the environment and never show: not in a worker's debug log, not on the CLI.

A trainer and a scoring worker run at log level ``debug`` with a distinctive signing key,
against a Redis of their own that demands a password (so the password has to reach every Redis
client for the test to pass at all), and with a Kafka SASL password in the environment (the
test broker is PLAINTEXT, so it is only carried, never sent: it must not be printed either).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline import Deployment
from registry_helpers import Scoring

from streams.admin import ensure_topics
from streams.stack import redis_server as local_redis
from streams.stack.process import free_port, stop

SIGNING_KEY = f"signing-key-{uuid.uuid4().hex}"
REDIS_PASSWORD = f"redis-password-{uuid.uuid4().hex}"
KAFKA_PASSWORD = f"kafka-password-{uuid.uuid4().hex}"
SECRETS = {
    "signing key": SIGNING_KEY,
    "Redis password": REDIS_PASSWORD,
    "SASL password": KAFKA_PASSWORD,
}


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[str]:
    """The URL, password included, of a Redis server of this test's own that demands it."""
    port, data = free_port(), tmp_path / "redis"
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    pid = local_redis.start(data, host="127.0.0.1", port=port, password=REDIS_PASSWORD)
    try:
        local_redis.wait_until_ready(pid, url, data / "redis.log")
        assert not local_redis.answers(f"redis://127.0.0.1:{port}/0"), "no password demanded"
        yield url
    finally:
        stop(pid)


def assert_no_secret_in(text: str, where: str) -> None:
    for name, secret in SECRETS.items():
        assert secret not in text, f"the {name} appears in {where}"


def test_secrets_never_appear_in_debug_logs_or_cli_output(
    driftline_env: dict, spawn, redis_with_password: str, driftline_cli
) -> None:
    driftline = driftline_cli
    env = {
        **driftline_env,
        "REDIS_URL": redis_with_password,
        "DRIFTLINE_SIGNING_KEY": SIGNING_KEY,
        "KAFKA_SASL_PLAIN_USERNAME": "driftline",
        "KAFKA_SASL_PLAIN_PASSWORD": KAFKA_PASSWORD,
    }
    config = ("--config", "examples/sea.toml", "--log-level", "debug")
    # The topics exist before the first event, as a deployment creates them (the events to
    # score below would otherwise race the workers and create a one-partition unlabeled topic,
    # which the workers refuse beside a four-partition outcomes topic).
    deployment = Deployment(driftline_env)
    ensure_topics(
        deployment.topics, deployment.kafka, partitions=deployment.config().worker.partitions
    )
    trainer = spawn("worker", *config, env=env, name="trainer")
    scorer = spawn("score", *config, env=env, name="scorer")
    spawn("produce", "--synthetic", "sea", "--events", "2000", "--quiet", env=env)
    scoring = Scoring(env)
    try:
        # v1 served: the trainer stored and signed it, the scorer fetched and verified it.
        scoring.until_served_by(1, timeout=90)
    finally:
        scoring.close()

    outputs = {
        "driftline ping": driftline("ping", env=env),
        "driftline ping (wrong password)": driftline(
            "ping", env={**env, "REDIS_URL": redis_with_password.replace(REDIS_PASSWORD, "nope")}
        ),
        "driftline registry ls": driftline("registry", "ls", env=env),
        "driftline registry show": driftline("registry", "show", "sea", "1", env=env),
        "driftline registry promote (refused)": driftline(
            "registry", "promote", "sea", "9", "--reason", "no such version", env=env
        ),
    }
    assert outputs["driftline ping"].returncode == 0, outputs["driftline ping"].stderr
    assert outputs["driftline ping (wrong password)"].returncode == 1
    assert outputs["driftline registry promote (refused)"].returncode == 2
    for command, result in outputs.items():
        assert_no_secret_in(result.stdout + result.stderr, f"the output of {command}")

    for process in (trainer, scorer):
        process.terminate()
        process.wait(30)
        log = Path(process.log_path).read_text(errors="replace")
        assert "[DEBUG]" in log, f"{process.log_path} holds no debug logging to scan"
        assert_no_secret_in(log, process.log_path)
