"""Monitoring on a real Prometheus: a trainer and a scorer scraped through file-based discovery.

The Prometheus server is Debian's package, started by the local stack's code
(:mod:`streams.stack.prometheus`) with the repository's alert rules, their ``for:`` durations
shortened to 1 s, and 1 s scrape and evaluation intervals. The tests of this module share one
deployment and run in order: the last one kills the trainer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer
from pipeline import Deployment, wait_for
from registry_helpers import Scoring, client_for

from streams.contract import encode_outcome
from streams.registry.records import serving_state
from streams.settings import METRICS_SD_DIR_ENV
from streams.stack import prometheus
from streams.stack.process import free_port, stop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "driftline.json"
LABELED = 3_000
OUTCOMES = 500
# A comparison with a number that ends an expression: `bool` turns the filter into 0/1 series.
_COMPARISON = re.compile(r"\s(==|!=|>=|<=|>|<)\s+(-?[\d.]+)\s*$")


def _as_bool(expr: str) -> str:
    return _COMPARISON.sub(r" \1 bool \2", expr)


class Prometheus:
    def __init__(self, url: str, root: Path, rules: Path) -> None:
        self.url, self.root, self.rules = url, root, rules

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus with the repository's rules (``for:`` 1 s), scraping every second."""
    if shutil.which("prometheus") is None:
        message = "prometheus is not installed (apt-get install prometheus; .ci/setup does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("prometheus")
    rules = yaml.safe_load(prometheus.RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    test_rules = root / "rules.yml"
    test_rules.write_text(yaml.safe_dump(rules))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pid = prometheus.start(
        root,
        host="127.0.0.1",
        port=port,
        sd_dir=root / "sd",
        rules=test_rules,
        scrape_interval="1s",
        evaluation_interval="1s",
    )
    try:
        prometheus.wait_until_ready(pid, url, root / "prometheus.log")
        yield Prometheus(url, root, test_rules)
    finally:
        stop(pid)


@pytest.fixture(scope="module")
def monitored(
    prometheus_server: Prometheus, module_driftline_env: dict, module_spawn
) -> dict[str, Any]:
    """A trainer that learned a stationary SEA stream (v1 serves throughout: a version promoted
    in the middle of a test would add series of its own) and a scorer that scored and joined
    events, both registered for the Prometheus above."""
    env = {
        **module_driftline_env,
        METRICS_SD_DIR_ENV: str(prometheus_server.root / "sd"),
        "DRIFTLINE__worker__metrics_interval": "1",
        "DRIFTLINE__models__sea__label_horizon": "30s",
    }
    trainer = module_spawn("worker", "--config", "examples/sea.toml", env=env, name="trainer")
    scorer = module_spawn("score", "--config", "examples/sea.toml", env=env, name="scorer")
    stationary = ("--drift-at", str(LABELED))
    module_spawn(
        "produce", "--synthetic", "sea", "--events", str(LABELED), *stationary, "--quiet", env=env
    )
    client = client_for(env)
    wait_for(lambda: client.history("sea"), timeout=120, what="v1 of sea", every=0.5)
    scoring = Scoring(env)
    scoring.send(OUTCOMES)
    scoring.all_scored(timeout=120)
    deployment = Deployment(env)
    producer = KafkaProducer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    labels = {e["event_id"]: e["label"] for e in _sent_events(OUTCOMES)}
    for event_id in scoring.sent:
        outcome = {"event_id": event_id, "model": "sea", "ts": 1, "label": labels[event_id]}
        producer.send(deployment.topics.outcomes, key=b"sea", value=encode_outcome(outcome))
    producer.flush()
    producer.close()
    return {"env": env, "trainer": trainer, "scorer": scorer, "scoring": scoring}


def _sent_events(count: int) -> list[dict[str, Any]]:
    from registry_helpers import unlabeled_sea_events

    events = unlabeled_sea_events()
    return [next(events) for _ in range(count)]


def test_events_learned_and_the_champion_match_the_stream_and_the_registry(
    prometheus_server: Prometheus, monitored: dict[str, Any]
) -> None:
    # Every labeled event sent, and every outcome, joined by the scorer into a labeled event.
    expected = LABELED + OUTCOMES
    wait_for(
        lambda: (
            prometheus_server.value('sum(driftline_events_learned_total{model="sea"})') == expected
        ),
        timeout=120,
        what=f"{expected} events learned in Prometheus",
        every=1.0,
    )
    client = client_for(monitored["env"])
    champion = serving_state(client.history("sea"))["sea"].stable.version
    wait_for(
        lambda: (
            prometheus_server.value('max(driftline_champion_version{model="sea"})') == champion
            and prometheus_server.value('max(driftline_serving_version{model="sea",arm="stable"})')
            == champion
        ),
        timeout=30,
        what=f"v{champion} as the champion in Prometheus",
        every=1.0,
    )
    # faust knows a partition's lag once it has committed there (every few seconds).
    wait_for(
        lambda: (
            {s["metric"]["job"] for s in prometheus_server.query("driftline_consumer_lag")}
            == {"driftline-trainer", "driftline-scorer"}
        ),
        timeout=30,
        what="the consumer lag of both workers",
        every=1.0,
    )


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    annotations = [a["expr"] for a in dashboard["annotations"]["list"]]
    return panels + annotations


def test_every_panel_query_and_alert_expression_returns_series(
    prometheus_server: Prometheus, monitored: dict[str, Any]
) -> None:
    rules = yaml.safe_load(prometheus.RULES.read_text())
    alerts = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert all(_as_bool(expr) != expr for expr in alerts), "every alert ends in a comparison"
    queries = [_as_bool(expr) for expr in _dashboard_queries() + alerts]
    # The live metrics come once the outcomes are joined and reported.
    wait_for(
        lambda: all(prometheus_server.query(query) for query in queries),
        timeout=120,
        what="series for every query",
        every=2.0,
    )
    empty = [query for query in queries if not prometheus_server.query(query)]
    assert not empty


def test_promtool_accepts_the_rules_and_the_configurations(
    prometheus_server: Prometheus,
) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    for argv in (
        ["check", "rules", str(prometheus.RULES)],
        ["check", "rules", str(prometheus_server.rules)],
        ["check", "config", str(prometheus_server.root / "prometheus.yml")],
        # The compose file's rules path exists only inside its container.
        ["check", "config", "--syntax-only", str(REPO / "deploy/prometheus/prometheus.yml")],
    ):
        result = subprocess.run([promtool, *argv], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(argv)}:\n{result.stdout}{result.stderr}"


def test_series_do_not_grow_with_distinct_event_ids(
    prometheus_server: Prometheus, monitored: dict[str, Any]
) -> None:
    scoring: Scoring = monitored["scoring"]
    series = 'count({__name__=~"driftline_.+", job="driftline-scorer"})'
    scored = 'sum(driftline_predictions_total{model="sea"})'
    before = prometheus_server.value(series)
    already = prometheus_server.value(scored) or 0
    scoring.send(10_000)
    wait_for(
        lambda: (prometheus_server.value(scored) or 0) >= already + 10_000,
        timeout=240,
        what="10,000 more predictions in Prometheus",
        every=1.0,
    )
    assert prometheus_server.value(series) == before
    ids = prometheus_server.get("/api/v1/label/event_id/values")
    assert ids == []


def test_the_worker_down_alert_fires_when_the_trainer_stops(
    prometheus_server: Prometheus, monitored: dict[str, Any]
) -> None:
    trainer = monitored["trainer"]
    # A crash: a worker stopped on purpose leaves discovery, one that died stays a target.
    trainer.send_signal(signal.SIGKILL)
    trainer.wait(10)

    def worker_down() -> bool:
        alerts = prometheus_server.get("/api/v1/alerts")["alerts"]
        return any(
            alert["labels"]["alertname"] == "DriftlineWorkerDown"
            and alert["labels"]["job"] == "driftline-trainer"
            and alert["state"] in ("pending", "firing")
            for alert in alerts
        )

    wait_for(worker_down, timeout=30, what="DriftlineWorkerDown for the trainer", every=0.5)
