"""Exceptions raised by the `trainers` package.

Every error a caller may want to handle has its own class, so that the streams side can tell a
bad configuration (fix the TOML and restart) from a bad event (dead-letter it and move on) from a
tampered artifact (refuse to load it) from a checkpoint that no longer fits the configuration
(reset the candidate, or restore its old parameters).

Examples
--------
>>> from trainers.errors import CandidateChangedError, ConfigError, TrainersError
>>> issubclass(ConfigError, TrainersError)
True
>>> error = CandidateChangedError("sea/agile changed", candidates=["sea/agile"])
>>> isinstance(error, ConfigError), error.candidates
(True, ('sea/agile',))

"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ArtifactIntegrityError",
    "CandidateChangedError",
    "ConfigError",
    "LabelError",
    "SnapshotError",
    "TrainersError",
]


class TrainersError(Exception):
    """Base class of every error raised on purpose by `trainers`."""


class ConfigError(TrainersError, ValueError):
    """A model or candidate specification is invalid; the message names the model and field."""


class CandidateChangedError(ConfigError):
    """A checkpointed candidate's specification differs from the one configured now.

    Its learned state belongs to the old parameters, so it is neither kept (it would pass for a
    model of the new parameters) nor silently thrown away: the operator restores the old
    parameters, renames the candidate, or resets it. `candidates` names each changed candidate
    as ``"model/candidate"``, the form ``driftline worker --reset-candidate`` takes.
    """

    def __init__(self, message: str, candidates: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.candidates = tuple(candidates)


class LabelError(TrainersError, ValueError):
    """An event's label does not fit the model's task (or a candidate's declared classes)."""


class ArtifactIntegrityError(TrainersError):
    """A serialized model failed its digest or signature check and was not unpickled."""


class SnapshotError(TrainersError, TypeError):
    """Snapshot bytes do not hold a trainer of the current snapshot format."""
