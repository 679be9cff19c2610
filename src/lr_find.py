"""fastai's learning-rate finder: ``python -m src.lr_find experiment=demo [stage=1]``.

Builds the data and model exactly as ``src.train`` would, freezes them as in the chosen stage,
runs the range test, writes ``lr_find.png`` (also to TensorBoard) and prints the suggestions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch.utils.tensorboard import SummaryWriter

from src.hardware import device_type
from src.optim.stages import LearningRate
from src.tuning.lr_find import find_lr, plot_lr_find

log = logging.getLogger(__name__)


def lr_find(cfg: DictConfig, stage_index: int = 0) -> dict[str, float]:
    """Run the finder for stage ``stage_index`` of ``cfg``; return the suggestions (valley, minimum, steep).

    Writes ``lr_find.png`` and a TensorBoard figure under ``cfg.paths.output_dir``.
    """
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.data)
    with open_dict(cfg):
        cfg.model.merge_with(datamodule.model_fields())
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer), schedule=instantiate(cfg.schedule))
    datamodule.setup("fit")
    device = device_type(cfg.trainer.accelerator)
    settings = cfg.lr_finder
    result = find_lr(
        model, datamodule.train_dataloader(), stage_index=stage_index, device=device,
        start_lr=settings.start_lr, end_lr=settings.end_lr, num_steps=settings.num_steps,
        beta=settings.beta, stop_factor=settings.stop_factor,
    )
    suggestions = result.suggestions()
    figure = plot_lr_find(result, suggestions, output_dir / "lr_find.png")
    with SummaryWriter(str(output_dir / "tensorboard")) as writer:
        writer.add_figure("lr_find", figure)
    log.info("lr_find suggestions for stage %d: %s", stage_index,
             ", ".join(f"{k}={v:.2e}" for k, v in suggestions.items()))
    return suggestions


def with_max_lr(lr: LearningRate, new_max: float) -> LearningRate:
    """A stage's ``lr`` with its largest rate set to ``new_max``, keeping the form (and a pair's ratio)."""
    if isinstance(lr, (int, float)):
        return new_max
    values = [float(v) for v in lr]
    if len(values) == 1:
        return [new_max]
    low, high = values
    return [low * new_max / high, new_max]


@hydra.main(version_base="1.3", config_path="../conf", config_name="lr_find")
def main(cfg: DictConfig) -> None:
    suggestions = lr_find(cfg, cfg.stage)
    # The command's result: the suggestions and where the plot is.
    for name, value in suggestions.items():
        print(f"{name}: {value:.2e}")
    print(f"plot: {Path(cfg.paths.output_dir) / 'lr_find.png'}")


if __name__ == "__main__":
    main()
