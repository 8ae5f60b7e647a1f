"""The named invariants of exactly-once learning, and the error raised when one would break.

They are stated in :mod:`streams.workers.ledger` (I1, I2, I4) and :mod:`streams.workers.outbox`
(I3, I5). Each is checked where it could break, so that a change that breaks one fails loudly
in the first unit test that reaches it, never silently in production.
"""

from __future__ import annotations

__all__ = ["InvariantViolated"]


class InvariantViolated(RuntimeError):
    """A step of the checkpoint protocol would break a named invariant; nothing was written.

    Parameters
    ----------
    invariant
        Its name: ``"I1"`` to ``"I5"``.
    detail
        What would have happened.
    """

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"invariant {invariant} violated: {detail}")
        self.invariant = invariant
