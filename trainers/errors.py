"""Exceptions raised by the `trainers` package.

Every error a caller may want to handle has its own class, so that the streams side can tell a
bad configuration (fix the TOML and restart) from a bad event (dead-letter it and move on) from a
tampered artifact (refuse to load it).

Examples
--------
>>> from trainers.errors import ConfigError, TrainersError
>>> issubclass(ConfigError, TrainersError)
True

"""

from __future__ import annotations

__all__ = ["ArtifactIntegrityError", "ConfigError", "LabelError", "TrainersError"]


class TrainersError(Exception):
    """Base class of every error raised on purpose by `trainers`."""


class ConfigError(TrainersError, ValueError):
    """A model or candidate specification is invalid; the message names the model and field."""


class LabelError(TrainersError, ValueError):
    """An event's label does not fit the model's task (or a candidate's declared classes)."""


class ArtifactIntegrityError(TrainersError):
    """A serialized model failed its digest or signature check and was not unpickled."""
