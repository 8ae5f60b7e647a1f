"""What serving a frozen copy costs: the served version's accuracy next to its live champion's.

The trainer keeps learning its champion after a promotion, while scorers serve the copy frozen at
promotion time. On the SEA demo stream (the example configuration, 40,000 events, the concept
switching at 20,000) this prints, at a few points, the rolling accuracy of the served copy and of
the live champion on the same last events, with and without refreshes (``refresh_every``).

    .venv/bin/python bench/staleness.py
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from streams.config import load_config
from trainers.synthetic import drift_stream
from trainers.trainer import ModelTrainer

CONFIG = Path(__file__).parents[1] / "streams" / "examples" / "sea.toml"
CHECKPOINTS = (10_000, 20_500, 22_000, 25_000, 30_000, 40_000)


def run(refresh_every: int) -> list[tuple[int, int, float, float]]:
    spec = dataclasses.replace(load_config(CONFIG, {}).models["sea"], refresh_every=refresh_every)
    trainer = ModelTrainer(spec)
    rows = []
    for position, (x, y) in enumerate(drift_stream("sea", n=40_000, drift_at=20_000, seed=42)):
        trainer.learn(x, y, source="sea", position=position)
        if position + 1 in CHECKPOINTS:
            staleness = trainer.report()["served"]["staleness"]
            if staleness is not None:
                rows.append(
                    (
                        position + 1,
                        trainer.champion_version,
                        staleness["served"],
                        staleness["champion"],
                    )
                )
    return rows


def main() -> None:
    print("| refresh_every | events | serving | served copy accuracy | live champion accuracy |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for refresh_every in (0, 2_000):
        for events, version, served, champion in run(refresh_every):
            print(
                f"| {refresh_every or 'off'} | {events:,} | v{version} | {served:.4f} "
                f"| {champion:.4f} |"
            )


if __name__ == "__main__":
    main()
