"""The throughput cost of TLS + SCRAM: one trainer worker on a plaintext stack and on a secured
one (``driftline stack up --secure``), over the same events, in the same run.

Both stacks run side by side on this machine for the whole run, and the worker alternates
between them (plaintext, secured, plaintext, secured, ...), so that the machine's noise falls on
both alike; the figure is the median of each side. The worker's rate counts from its first
checkpoint to the one that holds every event (see ``bench/pipeline_throughput.py``), without
metrics.

    .venv/bin/python bench/secure_overhead.py [--events 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import tempfile
from pathlib import Path

# The script's folder is on sys.path when it runs: its sibling measures a worker's rate.
from pipeline_throughput import worker_rate

from streams.sdk.replay import from_drift
from streams.stack import LocalStack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    events = list(
        from_drift(
            "hyperplane", model="bench", events=args.events, drift_at=args.events // 2, seed=1
        )
    )
    with tempfile.TemporaryDirectory() as plain_dir, tempfile.TemporaryDirectory() as secure_dir:
        plain, secure = LocalStack(Path(plain_dir)), LocalStack(Path(secure_dir))
        try:
            plain_endpoints = plain.up()
            secure_endpoints = secure.up(secure=True)
            trainer_env = secure.secrets.env_file("trainer")
            security = {
                name: value
                for name, value in _exports(trainer_env).items()
                if name.startswith("KAFKA_") and name != "KAFKA_BOOTSTRAP_SERVERS"
            }
            admin = {
                "bootstrap_servers": secure_endpoints.kafka_bootstrap,
                **secure.admin_settings(),
            }
            rates: dict[str, list[float]] = {"plaintext": [], "TLS + SCRAM": []}
            for _ in range(args.rounds):
                rates["plaintext"].append(
                    worker_rate(
                        events,
                        plain_endpoints.kafka_bootstrap,
                        plain_endpoints.redis_url,
                        metrics=False,
                    )[0]
                )
                rates["TLS + SCRAM"].append(
                    worker_rate(
                        events,
                        secure_endpoints.kafka_bootstrap,
                        _exports(trainer_env)["REDIS_URL"],
                        metrics=False,
                        security=security,
                        producer_kafka=admin,
                        prepare=lambda topics, group: secure.grant(
                            topics, trainer_group=group, partitions=1
                        ),
                    )[0]
                )
        finally:
            plain.down()
            secure.down()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"events: {args.events}, rounds: {args.rounds} (median of each)")
    for name, values in rates.items():
        runs = ", ".join(f"{value:,.0f}" for value in values)
        print(f"worker, {name + ':':13} {medians[name]:10,.0f} events/s  (runs: {runs})")
    cost = 1 - medians["TLS + SCRAM"] / medians["plaintext"]
    print(f"cost of TLS + SCRAM:   {cost:10.1%}  (1 - secured / plaintext)")


def _exports(env_file: Path) -> dict[str, str]:
    return {
        name: shlex.split(value)[0]
        for name, _, value in (
            line.removeprefix("export ").partition("=")
            for line in env_file.read_text().splitlines()
        )
    }


if __name__ == "__main__":
    main()
