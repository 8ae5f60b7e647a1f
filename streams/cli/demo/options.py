"""What ``driftline demo`` is asked to do: :class:`DemoOptions` and the default configuration.

The stream the demo sends is one of :mod:`trainers.synthetic`'s drift streams: ``--stream`` names
it, else the model's task picks it (:data:`DEFAULT_STREAMS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streams.cli.demo.errors import DemoError
from trainers.synthetic import TASK_OF_KIND

__all__ = ["DEFAULT_CONFIG", "DEFAULT_STREAMS", "EXAMPLES", "DemoOptions"]

#: The examples ship inside the package, so an installed driftline (the Docker image) has them.
#: Resolved from the ``streams`` package, not from this module's place within it.
EXAMPLES = Path(str(resources.files("streams") / "examples"))
#: The SEA example: what ``driftline demo`` runs without ``--config``.
DEFAULT_CONFIG = EXAMPLES / "sea.toml"
#: The stream of each task when ``--stream`` names none: an abrupt concept switch either way.
DEFAULT_STREAMS = {"classification": "sea", "regression": "friedman"}


@dataclass(frozen=True)
class DemoOptions:
    """What ``driftline demo`` was asked to do."""

    events: int = 40_000
    drift_at: int | None = None
    rate: float | None = 2000.0
    seed: int = 42
    config: Path | None = None
    """The models' configuration (default: :data:`DEFAULT_CONFIG`)."""
    stream: str | None = None
    """The drift stream (a :data:`trainers.synthetic.KINDS` name; default: by the task)."""
    report_dir: Path = Path("driftline-report")
    keep_stack: bool = False
    delayed_labels: bool = False
    """Labels only as outcomes, joined by the scorer, and two canaries (see
    :mod:`~streams.cli.demo.delayed`)."""
    outcome_delay: tuple[float, float] = (1.0, 30.0)
    """With :attr:`delayed_labels`: seconds between an event and its outcome, drawn uniformly."""

    @property
    def config_path(self) -> Path:
        """The configuration file, absolute: the workers may run from another folder."""
        return (self.config or DEFAULT_CONFIG).resolve()

    @property
    def drift_index(self) -> int:
        """Index of the concept switch (default: the middle of the stream)."""
        return self.events // 2 if self.drift_at is None else self.drift_at

    def stream_for(self, task: str) -> str:
        """The drift stream for a model of ``task``: :attr:`stream`, else the task's default.

        >>> DemoOptions().stream_for("regression"), DemoOptions(stream="agrawal").stream_for(
        ...     "classification")
        ('friedman', 'agrawal')
        >>> DemoOptions(stream="sea").stream_for("regression")
        Traceback (most recent call last):
        ...
        streams.cli.demo.errors.DemoError: --stream sea is a classification stream; the model \
is a regression one (its streams: friedman)
        """
        kind = self.stream or DEFAULT_STREAMS[task]
        if TASK_OF_KIND[kind] != task:
            fitting = ", ".join(k for k, t in TASK_OF_KIND.items() if t == task)
            raise DemoError(
                f"--stream {kind} is a {TASK_OF_KIND[kind]} stream; the model is a {task} one "
                f"(its streams: {fitting})"
            )
        return kind
