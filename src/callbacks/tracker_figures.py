"""Send matplotlib figures to every logger of a trainer that stores images (TensorBoard, MLflow, W&B)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure



def _mlflow_figure(logger: MLFlowLogger, tag: str, figure: Figure, step: int) -> None:
    logger.experiment.log_figure(logger.run_id, figure, f"figures/{tag}/step_{step:06d}.png")


def _mlflow_image_file(logger: MLFlowLogger, tag: str, path: Path) -> None:
    logger.experiment.log_artifact(logger.run_id, str(path), "figures")


def _wandb_figure(logger: WandbLogger, tag: str, figure: Figure, step: int) -> None:
    logger.log_image(key=tag, images=[figure], step=step)


def _wandb_image_file(logger: WandbLogger, tag: str, path: Path) -> None:
    logger.log_image(key=tag, images=[str(path)])


def _tensorboard_figure(logger: TensorBoardLogger, tag: str, figure: Figure, step: int) -> None:
    logger.experiment.add_figure(tag, figure, global_step=step)


# How each tracker stores a matplotlib figure; a logger not listed (CSV) has no images.
FIGURE_WRITERS: dict[type, Callable[[Any, str, Figure, int], None]] = {
    TensorBoardLogger: _tensorboard_figure,
    MLFlowLogger: _mlflow_figure,
    WandbLogger: _wandb_figure,
}
# Figures written before the loggers exist (lr_find.png): TensorBoard has them from lr_find itself.
IMAGE_FILE_WRITERS: dict[type, Callable[[Any, str, Path], None]] = {
    MLFlowLogger: _mlflow_image_file,
    WandbLogger: _wandb_image_file,
}


def writer_for(table: Mapping[type, Callable], logger: Logger) -> Callable | None:
    """The entry of ``table`` (by logger class) for ``logger``, or None where its tracker has none."""
    return next((write for cls, write in table.items() if isinstance(logger, cls)), None)


def figure_loggers(loggers: Iterable[Logger]) -> list[Logger]:
    """The loggers that store figures."""
    return [logger for logger in loggers if writer_for(FIGURE_WRITERS, logger) is not None]


def log_figure(loggers: Iterable[Logger], tag: str, figure: Figure, step: int) -> None:
    for logger in loggers:
        write = writer_for(FIGURE_WRITERS, logger)
        if write is not None:
            write(logger, tag, figure, step)


def datamodule_to_draw(trainer: L.Trainer) -> L.LightningDataModule | None:
    """The trainer's DataModule when a logger will take its figures, else None (nothing to draw)."""
    return trainer.datamodule if figure_loggers(trainer.loggers) else None


def log_figures(trainer: L.Trainer, figures: dict[str, Figure]) -> None:
    """Log each ``tag: figure`` at the current step, then free the figures."""
    for tag, figure in figures.items():
        log_figure(trainer.loggers, tag, figure, trainer.global_step)
        plt.close(figure)
