"""Send matplotlib figures to every logger of a trainer that stores images (TensorBoard, MLflow, W&B)."""

from __future__ import annotations

import lightning as L
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from src.runs.experiment_trackers import figure_loggers, log_figure


def datamodule_to_draw(trainer: L.Trainer) -> L.LightningDataModule | None:
    """The trainer's DataModule when a logger will take its figures, else None (nothing to draw)."""
    return trainer.datamodule if figure_loggers(trainer.loggers) else None


def log_figures(trainer: L.Trainer, figures: dict[str, Figure]) -> None:
    """Log each ``tag: figure`` at the current step, then free the figures."""
    for tag, figure in figures.items():
        log_figure(trainer.loggers, tag, figure, trainer.global_step)
        plt.close(figure)
