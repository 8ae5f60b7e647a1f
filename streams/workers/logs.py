"""What a worker's log says: one line per thing that happened, never one per event.

At the default level a worker logs when it is ready, which partitions it owns, each promotion,
rollback and refusal, and every ``interval`` seconds one progress line (:class:`Progress`):
events handled, and dead letters counted by reason instead of one warning each. The Kafka
clients' connection chatter is kept for ``--log-level debug``, and their repeated errors while
a broker is away are let through once per ``interval`` with a count of what was held back
(:class:`OncePer`), so an outage is one clear line and a retry, not a flood.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

__all__ = ["OncePer", "Progress", "quiet_kafka_clients"]

KAFKA_CLIENT_LOGGERS = ("aiokafka", "kafka")
FRAMEWORK_LOGGERS = ("faust", "mode")
PROGRESS_SECONDS = 30.0

# aiokafka logs this at every start while the group coordinator is elected: it is not an error.
_STARTUP_NOISE = ("GroupCoordinatorNotAvailableError", "Coordinator not available")


class OncePer(logging.Filter):
    """Let each distinct message template through at most once per ``interval`` seconds.

    Parameters
    ----------
    interval
        Seconds between two records of the same template.
    only
        Logger names (and their children) it applies to; records of others pass.
    clock
        Injected for tests.

    Examples
    --------
    >>> now = [0.0]
    >>> once = OncePer(30.0, clock=lambda: now[0])
    >>> message, args = "Unable connect to %s", ("b",)
    >>> record = logging.LogRecord("aiokafka", logging.ERROR, "", 0, message, args, None)
    >>> [once.filter(record) for _ in range(3)]
    [True, False, False]
    >>> now[0] = 31.0
    >>> once.filter(record), record.getMessage()
    (True, 'Unable connect to b (2 more like it in the last 30 s)')

    """

    def __init__(
        self,
        interval: float,
        *,
        only: tuple[str, ...] = KAFKA_CLIENT_LOGGERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.only = only
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: collections.Counter[str] = collections.Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.only):
            return True
        template = str(record.msg)
        if any(noise in record.getMessage() for noise in _STARTUP_NOISE):
            return False
        now = self.clock()
        last = self._last.get(template)
        if last is not None and now - last < self.interval:
            self._held[template] += 1
            return False
        self._last[template] = now
        held = self._held.pop(template, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {self.interval:g} s)"
        return True


def quiet_kafka_clients(level: int, *, interval: float = PROGRESS_SECONDS) -> None:
    """Keep the Kafka clients' and faust's chatter for debug, and the clients' repeated errors to
    one per ``interval``.

    Call it once logging is set up: the filter goes on the root logger's handlers, since the
    clients log from many child loggers (``aiokafka.conn``, ``kafka.client``, ...).
    """
    if level <= logging.DEBUG:
        return
    for name in (*KAFKA_CLIENT_LOGGERS, *FRAMEWORK_LOGGERS):
        logging.getLogger(name).setLevel(logging.WARNING)
    once = OncePer(interval, only=KAFKA_CLIENT_LOGGERS)
    for handler in logging.getLogger().handlers:
        handler.addFilter(once)


class Progress:
    """Counts what a worker did since its last progress line, and writes that line.

    Parameters
    ----------
    logger
        Where the line goes (at INFO).
    what
        What the worker does to an event, for the line: ``learned``, ``scored``.

    Examples
    --------
    >>> import logging
    >>> progress = Progress(logging.getLogger("doctest"), "learned")
    >>> progress.handled(1200)
    >>> progress.dead_letter("not_json"); progress.dead_letter("not_json")
    >>> progress.dead_letter("key_mismatch")
    >>> progress.line()
    '1200 events learned, 3 dead letters (not_json 2, key_mismatch 1)'
    >>> progress.line()
    'idle'

    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self._events = 0
        self._dead: collections.Counter[str] = collections.Counter()

    def handled(self, events: int = 1) -> None:
        self._events += events

    def dead_letter(self, reason: str) -> None:
        self._dead[reason] += 1

    def line(self) -> str:
        """The progress since the last line (and start counting afresh)."""
        parts = []
        if self._events:
            parts.append(f"{self._events} events {self.what}")
        if self._dead:
            reasons = ", ".join(f"{reason} {count}" for reason, count in self._dead.most_common())
            parts.append(f"{sum(self._dead.values())} dead letters ({reasons})")
        self._events, self._dead = 0, collections.Counter()
        return ", ".join(parts) or "idle"

    def log(self) -> None:
        self.logger.info("progress: %s", self.line())
