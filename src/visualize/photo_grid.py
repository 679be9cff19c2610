"""Photos from their files in rows, each with a title: the audit's findings as a picture."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from src.data.files.image_reader import UNREADABLE_IMAGE_ERRORS, load_rgb

Cell = tuple[Path, str]  # a photo's file and its title


def in_rows(cells: Sequence[Cell], columns: int = 4) -> list[list[Cell]]:
    """``cells`` cut into rows of ``columns``."""
    return [list(cells[start:start + columns]) for start in range(0, len(cells), columns)]


def photo_grid_figure(rows: Sequence[Sequence[Cell]]) -> Figure:
    """One row of axes per row of cells (as wide as the longest row), each photo under its title."""
    columns = max([len(row) for row in rows] + [1])
    figure, axes = plt.subplots(max(1, len(rows)), columns, figsize=(2.2 * columns, 2.4 * max(1, len(rows))),
                                squeeze=False)
    for ax_row, row in zip(axes, rows):
        for ax, (path, title) in zip(ax_row, row):
            try:
                ax.imshow(load_rgb(path))
            except UNREADABLE_IMAGE_ERRORS:  # changed since it was read: an empty cell whose title says so
                title += " (unreadable now)"
            ax.set_title(title, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    figure.tight_layout()
    return figure
