"""Kafka topic names used by driftline, all derived from one prefix.

The prefix (default ``driftline.``) comes from ``DRIFTLINE_TOPIC_PREFIX`` so that several
deployments, or parallel test runs, can share a cluster without seeing each other's data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_TOPIC_PREFIX", "TOPIC_PREFIX_ENV", "Topics"]

DEFAULT_TOPIC_PREFIX = "driftline."
TOPIC_PREFIX_ENV = "DRIFTLINE_TOPIC_PREFIX"


@dataclass(frozen=True, slots=True)
class Topics:
    """The full names of driftline's topics."""

    labeled: str
    unlabeled: str
    outcomes: str
    dlq: str
    registry: str
    predictions: str
    metrics: str

    @classmethod
    def from_prefix(cls, prefix: str = DEFAULT_TOPIC_PREFIX) -> Topics:
        """Topic names under ``prefix``, e.g. ``driftline.`` gives ``driftline.events.labeled``."""
        return cls(
            labeled=f"{prefix}events.labeled",
            unlabeled=f"{prefix}events.unlabeled",
            outcomes=f"{prefix}events.outcomes",
            dlq=f"{prefix}events.dlq",
            registry=f"{prefix}models.registry",
            predictions=f"{prefix}predictions",
            metrics=f"{prefix}models.metrics",
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Topics:
        """Topic names under ``$DRIFTLINE_TOPIC_PREFIX`` (default ``driftline.``).

        >>> Topics.from_env({"DRIFTLINE_TOPIC_PREFIX": "staging."}).labeled
        'staging.events.labeled'
        """
        env = os.environ if environ is None else environ
        return cls.from_prefix(env.get(TOPIC_PREFIX_ENV, DEFAULT_TOPIC_PREFIX))
