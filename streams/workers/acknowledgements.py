"""Saying once, in a worker's log, that the cluster stopped acknowledging its writes, and once
that it acknowledges them again.

With ``acks=all`` a record is acknowledged only once ``min.insync.replicas`` replicas hold it.
When a cluster loses that many brokers (two of three with the durable settings), or a partition
has no leader, the producer keeps its records and retries, the worker's checkpoints wait for
them (nothing is committed, nothing is lost) and the worker makes no progress. The Kafka clients
say so in their own words, node by node and retry by retry (:class:`streams.workers.logs.OncePer`
thins them out); this watch says it in driftline's, once per outage:

1. **sent**: every record the worker produces is counted as outstanding until its delivery
   resolves (acknowledged, or failed after the client's retries);
2. **check** (every second, on a timer of its own, so it runs while the agent waits): when
   records are outstanding and none has resolved for ``patience`` seconds, log one warning;
3. **resolved**: a delivery that failed after the client's retries is no longer outstanding
   (its sender keeps it and sends it again, which counts it afresh) but is no acknowledgement;
   the first acknowledgement after the warning logs how long the outage lasted, and the next
   outage is reported afresh.

Examples
--------
>>> import asyncio
>>> now = [0.0]
>>> watch = AcknowledgementWatch(patience=10.0, clock=lambda: now[0])
>>> loop = asyncio.new_event_loop()
>>> delivery = loop.create_future()
>>> watch.sent(delivery)
>>> now[0] = 11.0
>>> watch.check()
True
>>> watch.check()  # said once
False
>>> delivery.set_result(None)
>>> loop.run_until_complete(asyncio.sleep(0))  # done callbacks run on the loop
>>> watch.stalled
False
>>> loop.close()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["PATIENCE_SECONDS", "AcknowledgementWatch"]

log = logging.getLogger("driftline.worker")

PATIENCE_SECONDS = 15.0
"""Seconds without any acknowledgement, while records wait for one, before the watch speaks.

Longer than a leader election after a broker is lost (about 8 s on the local 3-node stack:
``bench/broker_recovery.py``), which the producer rides out by itself."""


class AcknowledgementWatch:
    """Counts a worker's outstanding deliveries and says when they stop resolving.

    Parameters
    ----------
    patience
        Seconds without a resolved delivery, while some are outstanding, that make an outage.
    clock
        Injected for tests.
    """

    def __init__(
        self, *, patience: float = PATIENCE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.patience = patience
        self.clock = clock
        self.outstanding = 0
        self._last_progress = clock()
        self._stalled_since: float | None = None

    @property
    def stalled(self) -> bool:
        """Whether an outage was reported and has not ended yet."""
        return self._stalled_since is not None

    def sent(self, delivery: asyncio.Future[Any]) -> None:
        """Step 1: count ``delivery`` until it resolves."""
        if self.outstanding == 0:
            # Waiting starts now, not at the last acknowledgement of an idle worker.
            self._last_progress = self.clock()
        self.outstanding += 1
        delivery.add_done_callback(self._resolved)

    def check(self) -> bool:
        """Step 2: log the outage once; True when this call reported it."""
        waited = self.clock() - self._last_progress
        if self.outstanding == 0 or self.stalled or waited < self.patience:
            return False
        self._stalled_since = self._last_progress
        log.warning(
            "Kafka has acknowledged none of this worker's %d record(s) waiting for %.0f s "
            "(brokers down, fewer in-sync replicas than min.insync.replicas, or a partition "
            "without a leader: the Kafka client's errors above say which): it waits and "
            "retries, committing nothing and losing nothing until the cluster answers",
            self.outstanding,
            waited,
        )
        return True

    def _resolved(self, delivery: asyncio.Future[Any]) -> None:
        """Step 3."""
        self.outstanding -= 1
        if delivery.cancelled() or delivery.exception() is not None:
            return
        now = self.clock()
        self._last_progress = now
        if self._stalled_since is not None:
            log.warning(
                "Kafka acknowledges this worker's records again, after %.0f s without; "
                "it resumes where it was",
                now - self._stalled_since,
            )
            self._stalled_since = None
