"""Send matplotlib figures to every TensorBoard logger of a trainer."""

from __future__ import annotations

import lightning as L
import matplotlib.pyplot as plt
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure


def tensorboard_loggers(trainer: L.Trainer) -> list[TensorBoardLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def datamodule_to_draw(trainer: L.Trainer) -> L.LightningDataModule | None:
    """The trainer's DataModule when a TensorBoard logger will take its figures, else None (nothing to draw)."""
    return trainer.datamodule if tensorboard_loggers(trainer) else None


def log_figures(trainer: L.Trainer, figures: dict[str, Figure]) -> None:
    """``add_figure`` each ``tag: figure`` at the current step, then free the figures."""
    for tag, figure in figures.items():
        for logger in tensorboard_loggers(trainer):
            logger.experiment.add_figure(tag, figure, global_step=trainer.global_step)
        plt.close(figure)
