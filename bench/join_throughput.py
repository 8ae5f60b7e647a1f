"""The scorer's join, in-process against a real Redis: events/s scored, outcomes/s joined, and
Redis memory per pending prediction.

Three runs over the same events, in this one command, so their ratios share the machine's load:

1. scoring with the join off (the model's predictions committed, nothing kept for outcomes);
2. scoring with the join on (each prediction kept in Redis until its outcome or horizon);
3. joining the outcomes of run 2 (each one matched to its prediction; the labeled record made).

Kafka is left out on purpose (the faust delivery path is measured in pipeline_throughput.py):
the producer is a no-op that resolves at once, so the figures are the join's own cost.

    .venv/bin/python bench/join_throughput.py [--events 20000]

Uses REDIS_URL when set, else starts a local stack for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from streams.config import load_config
from streams.contract import Outcome, UnlabeledEvent, encode_outcome
from streams.stack import LocalStack
from streams.topics import Topics
from streams.workers.checkpoint import RedisCheckpointStore
from streams.workers.join import Joiner, Served
from trainers.candidates import build_candidate
from trainers.synthetic import drift_stream

CONFIG = Path(__file__).parents[1] / "streams" / "examples" / "sea.toml"


@contextlib.contextmanager
def redis_url():
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with tempfile.TemporaryDirectory() as state:
        stack = LocalStack(Path(state))
        try:
            yield stack.up().redis_url
        finally:
            stack.down()


async def run(url: str, events: int) -> dict[str, float]:
    config = load_config(CONFIG, {})
    model = build_candidate(
        {"name": "m", "river": "StandardScaler | LogisticRegression"}, "classification"
    )
    stream = list(drift_stream("sea", n=events, drift_at=10**9, seed=1))
    for x, y in stream[:1000]:
        model.learn_one(x, y)
    topics = Topics.from_prefix("bench.")
    client = aioredis.Redis.from_url(url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"

    async def send(topic: str, key: bytes, value: bytes) -> Any:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def ignore(model: str, decision: Any) -> None:
        return None

    def joiner(specs: dict[str, Any]) -> Joiner:
        group = f"g-{uuid.uuid4().hex[:6]}"
        return Joiner(
            client,
            checkpoints=RedisCheckpointStore(client, prefix=prefix, group=group, key=b"k"),
            specs=specs,
            topics=topics,
            send=send,
            prefix=prefix,
            group=group,
            on_decision=ignore,
        )

    def served(i: int, x: dict) -> Served:
        prediction, proba = model.predict_with_proba(x)
        return Served(
            UnlabeledEvent(f"e-{i}", "sea", 1.0, x),
            [
                {
                    "version": 1,
                    "arm": "stable",
                    "prediction": prediction,
                    "probabilities": [[k, v] for k, v in (proba or {}).items()],
                    "serving": {"stable": 1, "trial": None, "trial_arm": None, "reference": None},
                }
            ],
        )

    figures: dict[str, float] = {}
    sea = config.models["sea"]
    for name, spec in (("join off", replace(sea, join=False)), ("join on", sea)):
        join = joiner({"sea": spec})
        state = await join.owned(0)
        assert state is not None
        before = (await client.info("memory"))["used_memory"]
        start = time.perf_counter()
        for i, (x, _) in enumerate(stream):
            await join.served(state, 0, i, [served(i, x)], [])
        figures[f"scored/s, {name}"] = events / (time.perf_counter() - start)
        if name == "join on":
            await asyncio.sleep(0.1)  # the no-op deliveries resolve
            await join.checkpoint()  # the outbox is trimmed: what stays is the pending state
            used = (await client.info("memory"))["used_memory"] - before
            figures["Redis bytes per pending prediction"] = used / events
            start = time.perf_counter()
            for i, (_, y) in enumerate(stream):
                outcome = Outcome(f"e-{i}", "sea", 1.0, y)
                await join.outcome(state, 0, i, outcome, encode_outcome(outcome))
            figures["outcomes joined/s"] = events / (time.perf_counter() - start)
    await client.aclose()
    cleanup = redis.Redis.from_url(url)
    for key in cleanup.scan_iter(match=f"{prefix}*"):
        cleanup.delete(key)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    with redis_url() as url:
        figures = asyncio.run(run(url, args.events))
    print(f"| {args.events:,} SEA events, one partition | figure |")
    print("| --- | ---: |")
    for name, value in figures.items():
        print(f"| {name} | {value:,.0f} |")


if __name__ == "__main__":
    main()
