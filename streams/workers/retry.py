"""What "Kafka is away, try again later" looks like to a worker, and a retry that never gives up.

A worker never crashes on a broker outage: whatever it must get from Kafka (a delivery, a read of
a topic) it tries again after a wait that grows like the ledger's (0.5 s doubling to 30 s,
:mod:`streams.workers.ledger`), and says so once per outage, not once per attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiokafka.errors  # type: ignore[import-untyped]  # no stubs; faust's own dependency
import faust.exceptions
import kafka.errors

__all__ = ["KAFKA_ERRORS", "RETRY_FIRST_SECONDS", "RETRY_MAX_SECONDS", "until_done"]

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
KAFKA_ERRORS: tuple[type[Exception], ...] = (
    aiokafka.errors.KafkaError,  # a delivery, after the producer's retries (KafkaTimeoutError...)
    faust.exceptions.ProducerSendError,  # faust's producer refusing a send (no metadata in time)
    kafka.errors.KafkaError,  # a read with kafka-python (the recall of what a topic holds)
)
"""What "Kafka is away, try again later" looks like to a worker: never a reason to crash."""

T = TypeVar("T")


async def until_done(
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    log: logging.Logger,
    errors: tuple[type[Exception], ...] = (*KAFKA_ERRORS, TimeoutError),
    first: float = RETRY_FIRST_SECONDS,
) -> T:
    """``attempt()``'s result, calling it again after each of ``errors`` (0.5 s, doubling to
    30 s): the first error of an outage is logged (``what`` did not succeed), and its end."""
    delay, outage = first, False
    while True:
        try:
            result = await attempt()
        except errors as error:
            if not outage:
                log.error("%s failed, tried again until it succeeds: %r", what, error)
                outage = True
            await asyncio.sleep(delay)
            delay = min(2 * delay, RETRY_MAX_SECONDS)
            continue
        if outage:
            log.info("%s succeeded after an outage", what)
        return result
