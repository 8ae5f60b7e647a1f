"""The demo's errors: why ``driftline demo`` stopped before its report."""

from __future__ import annotations

__all__ = ["DemoError", "WorkerExited"]


class DemoError(RuntimeError):
    """The demo cannot go on: a missing configuration, a worker that died, a topic not found."""


class WorkerExited(DemoError):
    """A worker subprocess ended before the demo stopped it; the message ends with its log."""
