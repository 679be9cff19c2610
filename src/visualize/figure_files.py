"""Writing a figure to a picture file."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def save_figure(figure: Figure, path: Path) -> Path:
    """Write ``figure`` to ``path`` (its folder created) at 100 dpi, then free it; return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
