"""Sources of events for ``driftline produce``: files, river's bundled datasets, drift.

Each source yields event objects of the labeled contract (:mod:`streams.contract`) with
deterministic ids (``<model>-<n>``), so a replay sent twice is recognisably the same. A file
without a label column yields events without ``label``: fine to send unlabeled, and refused by
the labeled contract's validation (which names the missing field) otherwise.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from trainers.synthetic import drift_stream

#: river datasets that ship inside the package (nothing is downloaded).
BUNDLED_DATASETS = (
    "Bananas",
    "Phishing",
    "ImageSegments",
    "Shuttle",
    "AirlinePassengers",
    "ChickWeights",
    "TrumpApproval",
    "WaterFlow",
)


_NO_LABEL = object()


def _event(
    model: str, index: int, features: dict[str, Any], label: Any = _NO_LABEL
) -> dict[str, Any]:
    event = {
        "event_id": f"{model}-{index}",
        "model": model,
        "ts": time.time(),
        "features": features,
    }
    if label is not _NO_LABEL:
        event["label"] = label
    return event


def _number_or_text(value: str) -> float | int | str | None:
    if value == "":
        return None
    for parse in (int, float):
        try:
            return parse(value)
        except ValueError:
            pass
    return value


def from_file(path: Path, *, model: str, label: str = "label") -> Iterator[dict[str, Any]]:
    """Events from a CSV file (a header row; ``label`` names the label column) or JSON lines.

    A JSON line is either a whole event (it has ``features``) or a flat object whose ``label``
    key is the label and whose other keys are the features. A row without the label column
    gives an event without ``label``.
    """
    with open(path, newline="") as handle:
        if path.suffix == ".csv":
            for index, row in enumerate(csv.DictReader(handle)):
                features = {name: _number_or_text(value) for name, value in row.items()}
                yield _event(model, index, features, features.pop(label, _NO_LABEL))
            return
        for index, line in enumerate(handle):
            if not line.strip():
                continue
            obj = orjson.loads(line)
            if "features" in obj:
                yield {"model": model, "event_id": f"{model}-{index}", "ts": time.time(), **obj}
            else:
                yield _event(model, index, obj, obj.pop(label, _NO_LABEL))


def from_dataset(name: str, *, model: str) -> Iterator[dict[str, Any]]:
    """Events from one of river's bundled datasets (see :data:`BUNDLED_DATASETS`)."""
    from river import datasets

    if name not in BUNDLED_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; bundled: {', '.join(BUNDLED_DATASETS)}")
    for index, (x, y) in enumerate(getattr(datasets, name)()):
        yield _event(model, index, {str(k): v for k, v in x.items()}, y)


def from_drift(
    kind: str,
    *,
    model: str,
    events: int,
    drift_at: int,
    width: int = 1,
    seed: int = 42,
    noise: float = 0.0,
) -> Iterator[dict[str, Any]]:
    """A synthetic stream with a concept switch (see :func:`trainers.synthetic.drift_stream`)."""
    stream = drift_stream(kind, n=events, drift_at=drift_at, width=width, seed=seed, noise=noise)
    for index, (x, y) in enumerate(stream):
        yield _event(model, index, x, y)


def paced(
    events: Iterable[dict[str, Any]],
    *,
    rate: float | None,
    limit: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[dict[str, Any]]:
    """At most ``limit`` events, ``rate`` per second (None: as fast as possible)."""
    start = clock()
    for index, event in enumerate(islice(events, limit)):
        if rate:
            delay = start + index / rate - clock()
            if delay > 0:
                sleep(delay)
        yield event
