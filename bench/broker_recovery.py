"""How long a trainer stops learning when a node of a 3-node Kafka cluster is SIGKILLed.

On a local 3-node KRaft cluster (``driftline stack up --brokers 3``: replication factor 3,
min ISR 2), for each node a fault test kills (the leader of the model's labeled partition, the
leader of the registry partition, the trainers' group coordinator, the active controller):

1. a fresh deployment (its own topics, group and Redis keys) runs one trainer worker;
2. a producer sends labeled events at a steady ``--rate`` (the SDK's batch records, idempotent,
   ``acks=all``) and the trainer reaches a steady state (``--warmup`` events learned);
3. the node is SIGKILLed; the clock starts;
4. **learned again**: the seconds until the trainer has learned an event that was sent after the
   kill (its ``driftline_events_learned_total`` counter passes what had been sent at the kill):
   the end-to-end recovery a user sees, the producer's own failover included;
5. the node is restarted; **back in ISR**: the seconds until it is again an in-sync replica of
   the model's labeled partition (the cluster durable again).

The figures are wall-clock seconds on whatever machine runs it; the load average is printed
beside the table. They mostly measure Kafka's failure detection (``broker.session.timeout.ms``
of the stack's nodes, the clients' metadata refresh), which is why they do not scale with the
machine's speed the way throughput does.

    .venv/bin/python bench/broker_recovery.py [--rate 2000] [--warmup 6000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kafka.partitioner.default import murmur2
from throughput import LEARNED, Deployment

from streams.sdk import replay
from streams.sdk.producer import EventProducer
from streams.stack import LocalStack
from streams.stack.cluster import (
    active_controller,
    group_coordinator,
    in_sync_replicas,
    partition_leader,
)

SEA_CONFIG = Path(__file__).parents[1] / "examples" / "sea.toml"
PARTITIONS = 4
TARGETS = ("labeled leader", "registry leader", "trainers' coordinator", "active controller")


class SteadyProducer(threading.Thread):
    """Labeled events of model ``sea`` at ``rate`` per second until stopped; ``sent`` counts the
    events handed to the producer."""

    def __init__(self, deployment: Deployment, rate: float) -> None:
        super().__init__(daemon=True)
        self.deployment, self.rate = deployment, rate
        self.sent = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        events = replay.from_drift("sea", model="sea", events=10**7, drift_at=10**7, seed=3)
        start = time.monotonic()
        with EventProducer(topic=self.deployment.topics.labeled, **self.deployment.kafka) as sdk:
            for event in events:
                if self.stopping.is_set():
                    break
                ahead = self.sent / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
                sdk.send(event)
                self.sent += 1


def victim(target: str, deployment: Deployment) -> int:
    kafka = deployment.kafka
    labeled = (murmur2(b"sea") & 0x7FFFFFFF) % PARTITIONS
    if target == "labeled leader":
        return partition_leader(kafka, deployment.topics.labeled, labeled)
    if target == "registry leader":
        return partition_leader(kafka, deployment.topics.registry, 0)
    if target == "trainers' coordinator":
        return group_coordinator(kafka, deployment.env["DRIFTLINE__worker__group"])
    return active_controller(kafka)


def seconds_until(condition: Callable[[], bool], *, timeout: float = 300) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not recovered within {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - start


def one_fault(
    stack: LocalStack, redis_url: str, target: str, args: argparse.Namespace
) -> tuple[int, float, float]:
    bootstrap = ",".join(stack.bootstrap_of(node) for node in stack.node_ids())
    deployment = Deployment(
        bootstrap,
        redis_url,
        config=SEA_CONFIG,
        overrides={"DRIFTLINE__worker__partitions": str(PARTITIONS)},
    )
    deployment.create_topics()
    worker = deployment.start("worker")
    producer = SteadyProducer(deployment, args.rate)
    producer.start()
    try:
        seconds_until(lambda: worker.counted(LEARNED) >= args.warmup, timeout=300)
        node = victim(target, deployment)
        stack.stop_node(node, kill=True)
        sent_at_kill = producer.sent
        learned_again = seconds_until(lambda: worker.counted(LEARNED) > sent_at_kill)
        stack.start_node(node)
        labeled = (murmur2(b"sea") & 0x7FFFFFFF) % PARTITIONS
        back = seconds_until(
            lambda: node in in_sync_replicas(deployment.kafka, deployment.topics.labeled, labeled)
        )
        return node, learned_again, back
    finally:
        producer.stopping.set()
        producer.join(30)
        deployment.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000, help="labeled events per second")
    parser.add_argument("--warmup", type=int, default=6000, help="events learned before a kill")
    parser.add_argument("--rounds", type=int, default=1, help="kills of each node (medians)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        stack = LocalStack(Path(state))
        endpoints = stack.up(brokers=3)
        try:
            rows = []
            for target in TARGETS:
                results = [
                    one_fault(stack, endpoints.redis_url, target, args) for _ in range(args.rounds)
                ]
                rows.append(
                    (
                        target,
                        results[-1][0],
                        statistics.median(r[1] for r in results),
                        statistics.median(r[2] for r in results),
                    )
                )
                print(
                    f"{target}: node {rows[-1][1]}, learned again after {rows[-1][2]:.1f} s",
                    flush=True,
                )
        finally:
            stack.down()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\n{os.cpu_count()} cores; load average (1, 5, 15 min) {load}")
    print(f"{args.rate:,.0f} labeled events/s; medians of {args.rounds} kill(s) per row\n")
    print(f"{'SIGKILLed node':<24}{'node':>6}{'learned again (s)':>20}{'back in ISR (s)':>18}")
    for target, node, learned_again, back in rows:
        print(f"{target:<24}{node:>6}{learned_again:>20.1f}{back:>18.1f}")


if __name__ == "__main__":
    main()
