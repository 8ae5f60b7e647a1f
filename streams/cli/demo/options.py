"""What ``driftline demo`` is asked to do: :class:`DemoOptions` and the default configuration."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["DEFAULT_CONFIG", "DemoOptions"]

#: The SEA example ships inside the package, so an installed driftline (the Docker image) has it.
#: Resolved from the ``streams`` package, not from this module's place within it.
DEFAULT_CONFIG = Path(str(resources.files("streams") / "examples" / "sea.toml"))


@dataclass(frozen=True)
class DemoOptions:
    """What ``driftline demo`` was asked to do."""

    events: int = 40_000
    drift_at: int | None = None
    rate: float | None = 2000.0
    seed: int = 42
    config: Path | None = None
    """The models' configuration (default: :data:`DEFAULT_CONFIG`)."""
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
