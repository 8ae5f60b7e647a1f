"""Faults injected into running workers: nothing is lost, nothing is learned twice."""

from __future__ import annotations

import os
import random
import re
import signal
import time

import pytest
import redis
import yaml
from pipeline import Deployment, encoded, sea_events, train_in_process, wait_for
from registry_helpers import TopicReader

from streams.stack import LocalStack
from streams.stack import redis_server as local_redis
from streams.stack.process import free_port, stop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.mark.parametrize("records", ["single", "batched"])
def test_sigkill_at_random_points_loses_and_repeats_nothing(driftline_env, spawn, records):
    """Single-event records (kcat's form) or the SDK's batch records: a kill may fall inside a
    batch, whose events the restarted worker learns again, none of them twice."""
    seed = int(os.environ.get("DRIFTLINE_FAULT_SEED", random.randrange(10_000)))
    print(f"fault seed: {seed} (DRIFTLINE_FAULT_SEED={seed} repeats this run)")
    deployment = Deployment(driftline_env)
    events = sea_events(50_000, drift_at=25_000)
    kill_points = sorted(random.Random(seed).sample(range(2_000, 48_000), 5))
    worker = spawn("worker", "--config", "examples/sea.toml", name="trainer")
    if records == "single":
        deployment.send_raw(encoded(events))
    else:
        deployment.send_batched(events)

    for kills, point in enumerate(kill_points, start=1):
        deployment.wait_until_learned("sea", point)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker = spawn("worker", "--config", "examples/sea.toml", name=f"trainer-{kills}")
    trainer = deployment.wait_until_learned("sea", len(events), timeout=180)

    reference, promotions = train_in_process(deployment.config(), events, deployment.topics.labeled)
    assert trainer.learned == reference.learned == {"steady": 50_000, "agile": 50_000}
    versions = wait_for(
        lambda: len(v := deployment.registry()) >= len(promotions) and v,
        timeout=30,
        what="every version",
    )
    assert [(v.version, v.candidate["name"], v.evidence) for v in versions] == [
        (p.version, p.candidate, p.evidence) for p in promotions
    ]
    probe = [event["features"] for event in sea_events(500, drift_at=250, seed=7)]
    assert trainer.champion == reference.champion
    live, expected = trainer.candidate(trainer.champion), reference.candidate(reference.champion)
    assert [live.predict_proba_one(x) for x in probe] == [
        expected.predict_proba_one(x) for x in probe
    ]


def test_training_goes_on_through_a_redis_outage(driftline_env, spawn, tmp_path):
    port, data = free_port(), tmp_path / "redis"
    url = f"redis://127.0.0.1:{port}/0"
    pid = local_redis.start(data, host="127.0.0.1", port=port)
    local_redis.wait_until_ready(pid, url, data / "redis.log")
    env = {**driftline_env, "REDIS_URL": url}
    deployment = Deployment(env)
    events = sea_events()
    try:
        worker = spawn("worker", "--config", "examples/sea.toml", env=env, name="trainer")
        deployment.send_raw(encoded(events[:10_000]))
        deployment.wait_until_learned("sea", 10_000)

        stop(pid)  # Redis goes away while the drift (and its promotion) streams in
        deployment.send_raw(encoded(events[10_000:]))
        time.sleep(8)
        assert worker.poll() is None, "the worker must survive the outage"
        assert len(deployment.registry()) == 1, "no version may be published without Redis"

        pid = local_redis.start(data, host="127.0.0.1", port=port)
        local_redis.wait_until_ready(pid, url, data / "redis.log")
        trainer = deployment.wait_until_learned("sea", len(events), timeout=120)
        reference, promotions = train_in_process(
            deployment.config(), events, deployment.topics.labeled
        )
        assert trainer.learned == reference.learned
        versions = wait_for(
            lambda: len(v := deployment.registry()) >= len(promotions) and v,
            timeout=30,
            what="the waiting versions",
        )
        assert [(v.version, v.candidate["name"]) for v in versions] == [
            (p.version, p.candidate) for p in promotions
        ]
        client = redis.Redis.from_url(url)
        assert all(client.exists(v.artifact.key) for v in versions)
    finally:
        stop(pid)
    with open(worker.log_path, errors="replace") as log:
        assert "Redis unavailable" in log.read()


def test_workers_reconnect_after_a_thirty_second_broker_outage(driftline_env, spawn, tmp_path):
    stack = LocalStack(tmp_path / "stack")  # a broker of its own, to stop and start
    endpoints = stack.up()
    env = {
        **driftline_env,
        "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap,
        "REDIS_URL": endpoints.redis_url,
    }
    deployment = Deployment(env)
    events = sea_events()
    to_score = [{**event, "event_id": f"u-{i}"} for i, event in enumerate(sea_events(4_000))]
    try:
        trainer_worker = spawn("worker", "--config", "examples/sea.toml", env=env, name="trainer")
        scorer = spawn("score", "--config", "examples/sea.toml", env=env, name="scorer")
        deployment.send_raw(encoded(events[:20_000]))
        deployment.send_unlabeled(to_score[:2_000])
        deployment.wait_until_learned("sea", 10_000)

        stack.stop_service("kafka")
        time.sleep(30)
        assert trainer_worker.poll() is None and scorer.poll() is None, "workers must survive"
        stack.start_service("kafka")

        deployment.send_raw(encoded(events[20_000:]))
        deployment.send_unlabeled(to_score[2_000:])
        trainer = deployment.wait_until_learned("sea", len(events), timeout=180)
        reference, promotions = train_in_process(
            deployment.config(), events, deployment.topics.labeled
        )
        assert trainer.learned == reference.learned == {"steady": 40_000, "agile": 40_000}
        versions = wait_for(
            lambda: len(v := deployment.registry()) >= len(promotions) and v,
            timeout=30,
            what="every version",
        )
        assert [(v.version, v.candidate["name"]) for v in versions] == [
            (p.version, p.candidate) for p in promotions
        ]
        predictions = TopicReader(env, deployment.topics.predictions)
        scored = predictions.wait_until(
            lambda records: {r["event_id"] for r in records} >= {e["event_id"] for e in to_score},
            timeout=120,
            what="every unlabeled event scored",
        )
        predictions.close()
        assert {r["event_id"] for r in scored} == {e["event_id"] for e in to_score}
        assert trainer_worker.poll() is None and scorer.poll() is None
    finally:
        stack.down()


def test_a_surviving_worker_takes_over_the_models_of_a_killed_one(driftline_env, spawn, tmp_path):
    # Names whose keys fall in the four partitions 0-3, so that each worker owns two models.
    models = ["model-1", "model-2", "model-0", "model-10"]
    sea = Deployment(driftline_env).raw_config()["models"]["sea"]
    config = tmp_path / "four.yaml"
    config.write_text(yaml.safe_dump({"models": dict.fromkeys(models, sea)}))
    deployment = Deployment(driftline_env, config_path=config)
    streams = {
        name: sea_events(20_000, drift_at=10_000, seed=seed, model=name)
        for seed, name in enumerate(models)
    }
    args = ("worker", "--config", str(config), "--log-level", "info")
    first = spawn(*args, name="trainer-a")
    second = spawn(*args, name="trainer-b")
    # Both in the group before any event, so that each claims its own models.
    wait_for(lambda: _assigned(first) and _assigned(second), timeout=60, what="the group")
    interleaved = [event for batch in zip(*streams.values(), strict=True) for event in batch]
    deployment.send_raw(encoded(interleaved[:40_000]))
    wait_for(
        lambda: len(t := deployment.trainers()) == 4 and all(m.events >= 5_000 for m in t.values()),
        timeout=120,
        what="both workers to train",
    )
    assert _claimed(first) and _claimed(second), "the group must spread the partitions"

    first.send_signal(signal.SIGKILL)
    first.wait()
    deployment.send_raw(encoded(interleaved[40_000:]))
    trained = wait_for(
        lambda: (t := deployment.trainers()) and all(t[m].events >= 20_000 for m in models) and t,
        timeout=180,
        what="the survivor to finish every model",
    )
    assert second.poll() is None
    assert _claimed(second) == {0, 1, 2, 3}
    versions = deployment.registry()
    for name in models:
        reference, promotions = train_in_process(
            deployment.config(), streams[name], deployment.topics.labeled, model=name
        )
        assert trained[name].learned == reference.learned
        published = [v.version for v in versions if v.model == name]
        assert published == [p.version for p in promotions], name
        assert published == list(range(1, len(published) + 1)), name


def _assigned(worker) -> list[int]:
    """The partitions the group last assigned a worker, from its log."""
    with open(worker.log_path, errors="replace") as log:
        assignments = re.findall(r"assigned partitions \[([\d, ]*)\]", log.read())
    return [int(p) for p in assignments[-1].split(",") if p.strip()] if assignments else []


def _claimed(worker) -> set[int]:
    """Partitions a worker has claimed, from its log."""
    with open(worker.log_path, errors="replace") as log:
        return {int(p) for p in re.findall(r"claimed \S+\[(\d+)\]", log.read())}


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib / 1024


def test_a_sixty_second_redis_outage_pauses_consumption_within_a_memory_bound(
    driftline_env, spawn, tmp_path
):
    port, data = free_port(), tmp_path / "redis"
    url = f"redis://127.0.0.1:{port}/0"
    pid = local_redis.start(data, host="127.0.0.1", port=port)
    local_redis.wait_until_ready(pid, url, data / "redis.log")
    limit = 20_000
    env = {**driftline_env, "REDIS_URL": url, "DRIFTLINE__worker__max_unacked_events": str(limit)}
    deployment = Deployment(env)
    events = sea_events(150_000, drift_at=5_000)
    try:
        worker = spawn("worker", "--config", "examples/sea.toml", env=env, name="trainer")
        deployment.send_raw(encoded(events[:10_000]))
        deployment.wait_until_learned("sea", 10_000)
        baseline = _rss_mib(worker.pid)

        stop(pid)
        deployment.send_raw(encoded(events[10_000:]))
        peak, started = baseline, time.monotonic()
        while time.monotonic() - started < 60:
            assert worker.poll() is None, "the worker must survive the outage"
            peak = max(peak, _rss_mib(worker.pid))
            time.sleep(1)
        print(f"RSS before the outage {baseline:.0f} MiB, peak during 60 s {peak:.0f} MiB")
        with open(worker.log_path, errors="replace") as log:
            assert "consumption paused" in log.read()

        pid = local_redis.start(data, host="127.0.0.1", port=port)
        local_redis.wait_until_ready(pid, url, data / "redis.log")
        trainer = deployment.wait_until_learned("sea", len(events), timeout=240)
        reference, _ = train_in_process(deployment.config(), events, deployment.topics.labeled)
        assert trainer.learned == reference.learned
        # 140,000 events arrived during the outage; at most `limit` of them are held.
        assert peak - baseline < 200, f"RSS grew by {peak - baseline:.0f} MiB"
    finally:
        stop(pid)
