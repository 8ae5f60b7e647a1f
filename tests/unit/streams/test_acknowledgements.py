"""The acknowledgement watch: one line when the cluster stops acknowledging, one when it resumes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from streams.workers.acknowledgements import AcknowledgementWatch


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def settle(loop: asyncio.AbstractEventLoop) -> None:
    """Run the done callbacks of the futures resolved so far."""
    loop.run_until_complete(asyncio.sleep(0))


def test_steady_acknowledgements_are_no_outage_however_long_records_keep_coming(loop):
    clock = Clock()
    watch = AcknowledgementWatch(patience=10, clock=clock)
    for _ in range(100):  # one record outstanding at every moment, each acknowledged in 1 s
        delivery = loop.create_future()
        watch.sent(delivery)
        clock.now += 1
        assert not watch.check()
        delivery.set_result(None)
        settle(loop)


def test_an_outage_is_said_once_and_its_end_once(loop, caplog):
    clock = Clock()
    watch = AcknowledgementWatch(patience=10, clock=clock)
    waiting = [loop.create_future() for _ in range(3)]
    for delivery in waiting:
        watch.sent(delivery)
    with caplog.at_level(logging.WARNING, logger="driftline.worker"):
        for _ in range(30):
            clock.now += 1
            watch.check()
        for delivery in waiting:
            delivery.set_result(None)
        settle(loop)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert "acknowledged none of this worker's 3 record(s) waiting for 10 s" in lines[0]
    assert "again, after 30 s without" in lines[1]
    assert not watch.stalled and watch.outstanding == 0


def test_a_failed_delivery_is_no_acknowledgement(loop, caplog):
    clock = Clock()
    watch = AcknowledgementWatch(patience=10, clock=clock)
    failing = loop.create_future()
    watch.sent(failing)
    clock.now = 11
    assert watch.check()
    failing.set_exception(TimeoutError("delivery timed out"))
    settle(loop)
    assert watch.stalled, "a failure does not end the outage"
    resent = loop.create_future()  # its sender sends it again
    watch.sent(resent)
    clock.now = 40
    assert not watch.check(), "the outage was said already"
    with caplog.at_level(logging.WARNING, logger="driftline.worker"):
        resent.set_result(None)
        settle(loop)
    assert not watch.stalled
    assert "after 40 s without" in caplog.records[-1].getMessage()


def test_an_idle_worker_is_never_in_an_outage(loop):
    clock = Clock()
    watch = AcknowledgementWatch(patience=10, clock=clock)
    delivery = loop.create_future()
    watch.sent(delivery)
    delivery.set_result(None)
    settle(loop)
    clock.now = 1_000  # nothing sent for a long time
    assert not watch.check()
    watch.sent(loop.create_future())
    clock.now += 5  # waiting starts at the send, not at the last acknowledgement
    assert not watch.check()
