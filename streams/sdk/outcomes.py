"""Delayed outcomes for a replayed stream: each event now, its label later (``produce --outcomes``).

In production a model scores an event now and its label (the *outcome*) arrives later, or first,
or never. :class:`OutcomeScheduler` replays that shape from a labeled source: for each event it
draws, from a seeded generator, how its outcome travels (:class:`OutcomeOrder`) and a delay in
:attr:`OutcomeTiming.delay`:

- ``after`` (the usual case): the event, without its label, is sent now and its outcome once the
  delay has passed;
- ``before``: the outcome is sent now and the event once the delay has passed, so a scorer sees
  an outcome whose prediction does not exist yet;
- ``missing``: the event is sent now and its outcome never.

Whatever is held back waits in one heap ordered by due time, sent as time passes
(:meth:`~OutcomeScheduler.send_due`, or :meth:`~OutcomeScheduler.sleep` in place of
``time.sleep`` while pacing) and drained at the end (:meth:`~OutcomeScheduler.drain`): a long
stream costs one heap entry per record in flight, not a thread or a timer each. The clock and the
sleep are injectable, so the schedule is unit-tested without waiting.

An outcome's ``ts`` is when it is sent (when it was "observed"); it is validated against the
contract when its event is submitted, so a source without labels fails on its first event rather
than seconds later.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from streams.contract import InvalidEvent, Outcome, ReasonCode, validate_outcome

__all__ = [
    "OutcomeCounts",
    "OutcomeOrder",
    "OutcomeScheduler",
    "OutcomeTiming",
    "OutcomeTimingError",
    "parse_delay",
]


class OutcomeTimingError(ValueError):
    """A delay range or share that cannot describe outcomes (negative, reversed, above 1)."""


class OutcomeOrder(StrEnum):
    """How one event's outcome travels relative to the event."""

    AFTER = "after"
    BEFORE = "before"
    MISSING = "missing"


def parse_delay(text: str) -> tuple[float, float]:
    """A delay range in seconds as a user types it: ``1-30``, ``0.5-2`` or a fixed ``5``.

    >>> parse_delay("1-30"), parse_delay("5"), parse_delay("0.5-2")
    ((1.0, 30.0), (5.0, 5.0), (0.5, 2.0))
    """
    low, separator, high = text.partition("-")
    try:
        bounds = (float(low), float(high if separator else low))
    except ValueError:
        raise OutcomeTimingError(
            f"{text!r} is not a delay in seconds (write 1-30 for a range, or 5)"
        ) from None
    return _checked_delay(bounds)


def _checked_delay(bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = bounds
    # `not <=` rather than `>`: NaN must fail too.
    if not 0 <= low <= high < float("inf"):
        raise OutcomeTimingError(
            f"a delay range is LOW-HIGH seconds with 0 <= LOW <= HIGH, not {low:g}-{high:g}"
        )
    return (low, high)


@dataclass(frozen=True)
class OutcomeTiming:
    """When outcomes are sent: ``delay`` seconds ``(low, high)``, drawn uniformly; a share
    ``before`` their event and a share ``missing`` (never sent); ``seed`` makes it repeatable."""

    delay: tuple[float, float] = (1.0, 30.0)
    before: float = 0.0
    missing: float = 0.0
    seed: int = 42

    def __post_init__(self) -> None:
        object.__setattr__(self, "delay", _checked_delay(self.delay))
        for name in ("before", "missing"):
            share = getattr(self, name)
            if not 0 <= share <= 1:
                raise OutcomeTimingError(f"the share {name} must lie in [0, 1], not {share:g}")
        if self.before + self.missing > 1:
            raise OutcomeTimingError(
                f"the shares before ({self.before:g}) and missing ({self.missing:g}) add up to "
                "more than 1"
            )

    def plan(self) -> Callable[[], tuple[OutcomeOrder, float]]:
        """A draw of (order, delay) per event, in event order: the same sequence for the same
        timing, so a test can tell which outcomes a run left out."""
        rng = random.Random(self.seed)

        def draw() -> tuple[OutcomeOrder, float]:
            share = rng.random()
            delay = rng.uniform(*self.delay)
            if share < self.missing:
                return OutcomeOrder.MISSING, delay
            if share < self.missing + self.before:
                return OutcomeOrder.BEFORE, delay
            return OutcomeOrder.AFTER, delay

        return draw


@dataclass
class OutcomeCounts:
    """What a scheduler has sent so far, and how many outcomes it left out on purpose."""

    events: int = 0
    outcomes: int = 0
    before: int = 0
    missing: int = 0


@dataclass(order=True)
class _Due:
    at: float
    sequence: int
    # Only (at, sequence) order the heap; sequence keeps equal due times in submission order.
    record: Mapping[str, Any] | Outcome = field(compare=False)


class OutcomeScheduler:
    """Send events now and their outcomes later (or first, or never), one heap by due time.

    ``send_event`` sends an event (the label still in it: dropping it is the sender's job, e.g.
    :meth:`~streams.sdk.producer.EventProducer.send_unlabeled`); ``send_outcome`` sends an
    :class:`~streams.contract.Outcome`. ``clock`` measures delays (monotonic seconds), ``wall``
    stamps outcomes (epoch seconds), ``sleep`` waits. Not thread-safe: one thread submits and
    drains.
    """

    def __init__(
        self,
        timing: OutcomeTiming,
        *,
        send_event: Callable[[Mapping[str, Any]], object],
        send_outcome: Callable[[Outcome], object],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.timing = timing
        self.counts = OutcomeCounts()
        self._send_event = send_event
        self._send_outcome = send_outcome
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._draw = timing.plan()
        self._heap: list[_Due] = []
        self._sequence = 0

    @property
    def pending(self) -> int:
        """Records held back, not sent yet."""
        return len(self._heap)

    def submit(self, event: Mapping[str, Any]) -> OutcomeOrder:
        """Send ``event`` or its outcome now, as its draw says, and hold the other back.

        Raises :class:`~streams.contract.InvalidEvent` before sending anything when the event
        cannot give a valid outcome (no label, say).
        """
        outcome = _outcome_of(event)
        order, delay = self._draw()
        self.send_due()
        now = self._clock()
        if order is OutcomeOrder.BEFORE:
            self._emit(outcome)
            self._hold(now + delay, event)
            self.counts.before += 1
        else:
            self._emit(event)
            if order is OutcomeOrder.AFTER:
                self._hold(now + delay, outcome)
            else:
                self.counts.missing += 1
        return order

    def send_due(self) -> int:
        """Send every held-back record whose time has come; returns how many."""
        now = self._clock()
        sent = 0
        while self._heap and self._heap[0].at <= now:
            self._emit(heapq.heappop(self._heap).record)
            sent += 1
        return sent

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, sending what falls due meanwhile (a stand-in for ``time.sleep``)."""
        until = self._clock() + seconds
        self.send_due()
        while (now := self._clock()) < until:
            next_due = self._heap[0].at if self._heap else until
            self._sleep(max(0.0, min(until, next_due) - now))
            self.send_due()

    def drain(self) -> None:
        """Wait until every held-back record is sent (the last one's due time)."""
        self.send_due()
        while self._heap:
            self.sleep(self._heap[0].at - self._clock())

    def _hold(self, at: float, record: Mapping[str, Any] | Outcome) -> None:
        heapq.heappush(self._heap, _Due(at, self._sequence, record))
        self._sequence += 1

    def _emit(self, record: Mapping[str, Any] | Outcome) -> None:
        if isinstance(record, Outcome):
            self._send_outcome(dataclasses.replace(record, ts=self._wall()))
            self.counts.outcomes += 1
        else:
            self._send_event(record)
            self.counts.events += 1


def _outcome_of(event: Mapping[str, Any]) -> Outcome:
    if "label" not in event:
        raise InvalidEvent(
            ReasonCode.MISSING_FIELD,
            f"event {event.get('event_id')!r} has no 'label': there is no outcome to send",
        )
    return validate_outcome(
        {
            "event_id": event.get("event_id"),
            "model": event.get("model"),
            # Stamped again when sent; any valid time does for the validation.
            "ts": 0,
            "label": event["label"],
        }
    )
