"""A Prometheus server (Debian's ``prometheus`` package) on loopback for the local stack.

It scrapes the workers that register themselves in its file-based service discovery folder
(:func:`streams.metrics.register_target`: one ``driftline-trainer-PID.json`` or
``driftline-scorer-PID.json`` per worker) and evaluates the repository's alert rules
(``deploy/prometheus/rules.yml``), the very file docker-compose mounts: what alerts locally is
what alerts in a deployment. It is optional: ``driftline stack up --with-prometheus``.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import yaml

from streams.stack.process import StackError, require_tool, spawn, wait_until_answering

__all__ = ["RULES", "answers", "config", "start", "wait_until_ready"]

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
"""The alert rules of the repository (docker-compose mounts the same file)."""

JOBS = ("driftline-trainer", "driftline-scorer")


def config(
    sd_dir: Path, rules: Path, *, scrape_interval: str = "5s", evaluation_interval: str = "5s"
) -> dict[str, object]:
    """The server's configuration: one job per kind of worker, found through ``sd_dir``."""
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation_interval,
            # A scrape must end before the next one starts.
            "scrape_timeout": scrape_interval,
        },
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": job,
                "file_sd_configs": [
                    {"files": [str(sd_dir / f"{job}-*.json")], "refresh_interval": "5s"}
                ],
            }
            for job in JOBS
        ],
    }


def start(
    root: Path,
    *,
    host: str,
    port: int,
    sd_dir: Path,
    rules: Path = RULES,
    scrape_interval: str = "5s",
    evaluation_interval: str = "5s",
) -> int:
    """Write the configuration under ``root`` and start Prometheus; its pid (not yet ready).

    Prometheus re-reads the discovery files itself (it watches ``sd_dir``), so workers come and
    go without a reload.
    """
    server = require_tool("prometheus")
    if not rules.is_file():
        raise StackError(f"no alert rules at {rules}: run from a checkout of the repository")
    root.mkdir(parents=True, exist_ok=True)
    sd_dir.mkdir(parents=True, exist_ok=True)
    config_file = root / "prometheus.yml"
    config_file.write_text(
        yaml.safe_dump(
            config(
                sd_dir,
                rules,
                scrape_interval=scrape_interval,
                evaluation_interval=evaluation_interval,
            ),
            sort_keys=False,
        )
    )
    return spawn(
        [
            server,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address={host}:{port}",
            # Debian's default points at console files the package keeps elsewhere.
            "--web.console.templates=/etc/prometheus/consoles",
            "--web.console.libraries=/etc/prometheus/console_libraries",
        ],
        log_path=root / "prometheus.log",
    )


def answers(url: str) -> bool:
    """Whether the Prometheus at ``url`` is ready to serve queries."""
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until_ready(pid: int, url: str, log: Path, *, timeout: float = 30.0) -> None:
    """Block until Prometheus is ready; raise with its log's tail if it dies or hangs."""
    wait_until_answering(
        pid, lambda: answers(url), name="prometheus", log=log, timeout=timeout, every=0.2
    )
