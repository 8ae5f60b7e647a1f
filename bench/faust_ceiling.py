"""How fast a faust agent that does nothing reads a topic: the ceiling for any faust worker.

    python bench/faust_ceiling.py BOOTSTRAP TOPIC EVENTS

Uses the trainer worker's consumer settings and event loop, prints events/s, and exits.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import faust
import mode.loop

from streams.workers.app import FETCH_BYTES_PER_PARTITION, MAX_POLL_RECORDS


def main() -> None:
    bootstrap, topic_name, events = sys.argv[1], sys.argv[2], int(sys.argv[3])
    mode.loop.use("uvloop")
    app = faust.App(
        f"faust-ceiling-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        consumer_max_fetch_size=FETCH_BYTES_PER_PARTITION,
        broker_max_poll_records=MAX_POLL_RECORDS,
    )
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")

    @app.agent(topic)
    async def count(stream: faust.StreamT) -> None:
        seen, started = 0, 0.0
        async for _ in stream:
            seen += 1
            if seen == 1:
                started = time.perf_counter()
            elif seen == events:
                print(f"{(events - 1) / (time.perf_counter() - started):.0f}", flush=True)
                # Stopping a faust worker from inside its agent takes seconds; the figure is out.
                os._exit(0)

    faust.Worker(
        app, loglevel="error", quiet=True, redirect_stdouts=False
    ).execute_from_commandline()


if __name__ == "__main__":
    main()
