"""Send matplotlib figures to every logger of a trainer that stores images (TensorBoard, MLflow, W&B)."""

from __future__ import annotations

import lightning as L
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from src.experiment_trackers import log_figure


def log_figures(trainer: L.Trainer, figures: dict[str, Figure]) -> None:
    """Log each ``tag: figure`` at the current step, then free the figures."""
    for tag, figure in figures.items():
        log_figure(trainer.loggers, tag, figure, trainer.global_step)
        plt.close(figure)
