"""``predictions.csv``, as ``src.evaluate`` and ``src.predict`` write it: one row per image."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from src.core.atomic_write import atomic_open


def prediction_cells(
    index: int | tuple[int, ...], probabilities: torch.Tensor, classes: Sequence[str], label_delim: str | None
) -> tuple[str, str]:
    """The prediction and probability cells: one class and its probability, or a multi-label
    prediction's classes (an ``index`` tuple, in its order) and their probabilities joined by ``label_delim``."""
    if isinstance(index, tuple):
        delim = label_delim or " "
        return delim.join(classes[i] for i in index), delim.join(f"{float(probabilities[i]):.6f}" for i in index)
    return classes[index], f"{float(probabilities[index]):.6f}"


def write_predictions_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write ``header`` and ``rows`` to ``path`` (atomically, its folder created)."""
    with atomic_open(path, newline="") as f:
        writer = csv.writer(f, lineterminator="\n")  # the csv module's default is \r\n
        writer.writerow(header)
        writer.writerows(rows)
