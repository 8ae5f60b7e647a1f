"""The faust app both workers are built on: one input topic, raw outputs, manual acknowledgements.

A driftline worker is a faust app with one agent that reads raw records from one topic and
hands each to a runtime object (:class:`streams.workers.trainer.TrainingRuntime`,
:class:`streams.workers.scorer.ScoringRuntime`) that decides when the record is acknowledged.
What they share lives here: the app's options, the producer side (``send``), the agent, flow
control of the consumer, and the dead-letter record of a message.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT

from streams.admin import DEAD_LETTER_MAX_BYTES
from streams.config import DriftlineConfig
from streams.contract import InvalidEvent, RecordEntry, dead_letter_record
from streams.settings import PRODUCER_DURABILITY, faust_broker_options
from streams.workers.acknowledgements import AcknowledgementWatch
from streams.workers.logs import quiet_kafka_clients

__all__ = ["WorkerApp", "dead_letter_of"]

log = logging.getLogger("driftline.worker")

# Enough for MAX_POLL_RECORDS single-event records (~250 bytes each); small enough that the
# fetched batch records waiting in memory stay a small share of a worker's RSS: 16 MiB made it
# swing by ±8% over a long run (bench/throughput.py).
FETCH_BYTES_PER_PARTITION = 4 * 1024 * 1024
MAX_POLL_RECORDS = 10_000
# Records fetched and waiting for the agent. faust's default (4,096) bounds records, not bytes:
# of the SDK's batch records (up to 512 KiB each) a worker behind by a million events held its
# whole backlog, 2,000 records and ~230 MiB, and its RSS fell from 360 to 300 MiB as it caught
# up (±16% over 1,000,000 events). 64 records is at most 32 MiB of them: RSS flat at 199 MiB
# from the 45,000th event to the millionth; 128 dipped by 6% as what it fetched while starting
# drained (bench/throughput.py's long run). From a backlog a worker now learns at the pace of
# its fetches, not from records already in memory: see _GIL_SWITCH_SECONDS in streams.cli.main.
STREAM_BUFFER_RECORDS = 64


def dead_letter_of(
    message: Any, error: InvalidEvent, entry: RecordEntry | None = None
) -> tuple[bytes, bytes]:
    """The dead-letter record (key, value) of a faust message refused for ``error``: of the
    whole record, or of its one event ``entry`` (alone, with its index, for a batch's event)."""
    tp = message.tp
    value = message.value or b""
    return dead_letter_record(
        value if entry is None else entry.original(value),
        error,
        topic=tp.topic,
        partition=tp.partition,
        offset=message.offset,
        key=message.key,
        index=None if entry is None else entry.index,
    )


class _DurableProducer(faust_aiokafka.Producer):
    """faust's aiokafka producer, idempotent with ``acks=all`` outside transactions too.

    faust asks for idempotence only inside a transaction (driftline uses none): its
    ``_settings_extra`` is the hook it merges last into the aiokafka settings for exactly that,
    so extending it (rather than rebuilding ``_new_producer``) keeps every other setting faust's.
    """

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), **PRODUCER_DURABILITY}


class _DurableTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport building :class:`_DurableProducer`: faust's own way to choose a
    transport's producer (a ``Producer`` class attribute, as each of its drivers sets)."""

    Producer = _DurableProducer


def _faust_tps(tps: Iterable[Any]) -> set[TP]:
    # A message's tp is aiokafka's TopicPartition, which faust's flow control asserts against.
    return {TP(tp.topic, tp.partition) for tp in tps}


class WorkerApp:
    """A faust app with driftline's options, its raw output topics and its consumer controls.

    Parameters
    ----------
    group
        The consumer group (and faust app id).
    config
        The parsed configuration (worker settings, topics).
    kafka
        kafka-python settings of the cluster (:attr:`streams.settings.Settings.kafka`).
    outputs
        The topics this worker writes.
    """

    def __init__(
        self,
        group: str,
        config: DriftlineConfig,
        kafka: dict[str, Any],
        outputs: Iterable[str],
    ) -> None:
        self.app = faust.App(
            group,
            **faust_broker_options(kafka),
            store="memory://",
            web_enabled=False,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            producer_max_request_size=DEAD_LETTER_MAX_BYTES,
            topic_partitions=config.worker.partitions,
            # faust's own topics. Measured on a broker: a driftline worker makes faust create
            # one, "<group>-__assignor-__leader" (1 partition), for its leader election, which
            # only @app.timer/@app.task(on_leader=True) use; driftline uses none, so it is not
            # created, and with it gone a worker creates no topic of faust's. The replication
            # factor is [topics.internal]'s (resolved at start, min(3, brokers) by default;
            # faust's default of 1 where no start check ran) for any topic faust still makes.
            topic_disable_leader=True,
            topic_replication_factor=(
                config.topic_settings.group("internal").replication_factor or 1
            ),
            stream_wait_empty=False,
            # faust's defaults fetch little per request: a no-op agent reads ~4k events/s here,
            # and ~18k/s with larger fetches (bench/pipeline_throughput.py).
            consumer_max_fetch_size=FETCH_BYTES_PER_PARTITION,
            broker_max_poll_records=MAX_POLL_RECORDS,
            stream_buffer_maxsize=STREAM_BUFFER_RECORDS,
            # A worker that dies is noticed after this long, and its partitions move on.
            broker_session_timeout=config.worker.session_timeout,
            broker_heartbeat_interval=config.worker.session_timeout / 5,
            consumer_group_instance_id=config.worker.instance_id or None,
        )
        # App.transport's public setter, before anything builds the transport: faust makes the
        # app's producer (and consumer) from it. A transport registered under a URL scheme of our
        # own would need a setuptools entry point and another broker URL in every deployment.
        self.app.transport = _DurableTransport(self.app.conf.broker_consumer, self.app)
        self._outputs = frozenset(outputs)
        self._input = ""
        self._ready = False
        self.acknowledgements = AcknowledgementWatch()
        """Says once when the cluster stops acknowledging this worker's records, and when it
        acknowledges them again."""
        self.every(1.0, self._watch_acknowledgements)

    def _watch_acknowledgements(self) -> None:
        self.acknowledgements.check()

    def every(self, seconds: float, tick: Callable[[], Awaitable[None] | None]) -> None:
        """Call ``tick`` every ``seconds`` while the worker runs (awaited if a coroutine)."""

        async def timer() -> None:
            ticked = tick()
            if ticked is not None:
                await ticked

        self.app.timer(interval=seconds, name=f"{getattr(tick, '__name__', 'tick')}-timer")(timer)

    def run(self, *, log_level: str) -> None:
        """Run the worker until SIGINT or SIGTERM: logs as :mod:`streams.workers.logs` says."""
        worker = _Worker(self.app, loglevel=log_level, quiet=True)
        if not sys.stdout.isatty():
            worker.spinner = None  # its escape codes would garble log files
        worker.execute_from_commandline()

    def _raw_topic(self, name: str) -> faust.TopicT:
        return self.app.topic(name, key_serializer="raw", value_serializer="raw")

    async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
        """Produce a record to one of the ``outputs``, after those sent before it; the future
        resolves once the broker has it (``acks=all``)."""
        if topic not in self._outputs:
            raise KeyError(f"{topic!r} is not an output topic of this worker")
        # Straight to faust's producer, not through faust's Topic.send: that yields to the event
        # loop three times a record (its producer-started check), and each yield let aiokafka's
        # sender send what it held, so a scorer's predictions went out in one produce request
        # per two or three records (25,110 requests for 60,000 predictions).
        delivery = await self.app.producer.send(
            topic, key, value, partition=None, timestamp=None, headers=None
        )
        # aiokafka's delivery is an asyncio.Future, though faust types it as an Awaitable.
        future = cast("asyncio.Future[Any]", delivery)
        self.acknowledgements.sent(future)
        return future

    def consume(self, topic: str, handle: Callable[[EventT], Awaitable[None]]) -> None:
        """Hand every record of ``topic``, in order, to ``handle``, which acknowledges it."""
        self._input = topic

        async def agent(stream: faust.StreamT) -> None:
            # One at a time: faust commits past an event still in hand with concurrency > 1.
            async for event in stream.noack().events():  # type: ignore[attr-defined]
                await handle(event)

        self.app.agent(self._raw_topic(topic), name=f"{topic}-agent", concurrency=1)(agent)

    def on_rebalance(
        self,
        *,
        revoked: Callable[[set[TP]], Awaitable[None]],
        assigned: Callable[[set[TP]], None],
    ) -> None:
        """Call ``revoked`` with the partitions a rebalance takes away (before they go), and
        ``assigned`` with those it gives."""

        async def on_revoked(sender: Any, *args: Any, signal: Any = None, **_: Any) -> None:
            await revoked(set(args[0]))

        async def on_assigned(sender: Any, *args: Any, signal: Any = None, **_: Any) -> None:
            if not self._ready:
                self._ready = True
                log.info("ready: group %s, consuming %s", self.app.conf.id, self._input)
            assigned(set(args[0]))

        # mode types signal receivers too narrowly for coroutine functions, which it does await.
        self.app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    def on_shutdown(self, stop: Callable[[], Awaitable[None] | None]) -> None:
        """Call (and await, if it is a coroutine function) ``stop`` when the worker begins to shut
        down (SIGINT, SIGTERM), while the producer still runs."""

        async def on_before_shutdown(sender: Any, *args: Any, signal: Any = None, **_: Any) -> None:
            stopped = stop()
            if stopped is not None:
                await stopped

        self.app.on_before_shutdown.connect(on_before_shutdown)  # type: ignore[arg-type]

    def pause(self, tps: Iterable[TP]) -> None:
        """Stop fetching from ``tps`` for good (a partition waiting for an operator).

        faust drops the records of a fetched batch it has not handed out yet: only for a
        partition nothing more will be learned from before a restart.
        """
        self.app.consumer.pause_partitions(_faust_tps(tps))

    def give_up(self, tp: TP) -> None:
        """Ask the group to rebalance, so that ``tp`` goes to whoever the group assigns it now.

        Kafka's group protocol cannot drop one partition of a member; a rejoin makes the group
        assign every partition afresh, and the worker that gets ``tp`` claims it again.
        """
        thread = self.app.consumer._thread  # type: ignore[attr-defined]
        coordinator = thread._consumer._coordinator
        # aiokafka runs in faust's consumer thread, on its own event loop.
        thread.thread_loop.call_soon_threadsafe(coordinator.request_rejoin)


class _Worker(faust.Worker):
    """faust's worker, with the Kafka clients' and faust's chatter kept for debug."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        quiet_kafka_clients(level)
