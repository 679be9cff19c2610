"""Train an image classifier: ``python -m src.train experiment=resnet50 data.root=DIR``.

``train(cfg)`` is the whole run as a function of the composed config (tests call it directly);
``main`` is the thin Hydra wrapper that composes the config and prints where the run went.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from src.checkpoint_io import AtomicCheckpointIO
from src.config_checks import check_train_config
from src.run_files import check_writable, write_json, write_resolved_config

log = logging.getLogger(__name__)


def _monitoring_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that keeps the best model (the one with a monitored metric)."""
    return next((c for c in trainer.checkpoint_callbacks if c.monitor is not None), None)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` is this run directory's ``checkpoints/last.ckpt`` (resume a killed run in place:
    ``ckpt_path=last hydra.run.dir=RUN``); any other value is a checkpoint path, or None."""
    if ckpt_path != "last":
        return ckpt_path
    last = output_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(
            f"ckpt_path=last resumes from {last}, which does not exist; pass the run directory of the run to "
            "resume (hydra.run.dir=outputs/train/runs/<time>) or a checkpoint path (ckpt_path=RUN/checkpoints/last.ckpt)"
        )
    return str(last)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the model described by ``cfg``; return the final and best validation metrics.

    The run directory (``cfg.paths.output_dir``) receives ``config.yaml`` (resolved),
    ``split.csv``, ``checkpoints/``, ``tensorboard/`` and ``metrics.json``.
    """
    check_train_config(cfg)  # every config problem at once, before any data is read
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    check_writable(output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)

    datamodule = instantiate(cfg.data)
    schedule = instantiate(cfg.schedule)
    with open_dict(cfg):
        cfg.model.classes = datamodule.classes  # the one source of the class list and count
    write_resolved_config(output_dir / "config.yaml", cfg)
    model = instantiate(
        cfg.model,
        optimizer=instantiate(cfg.optimizer),
        schedule=schedule,
        # YAML text, not a mapping: instantiate would build every _target_ inside a mapping.
        run_config=OmegaConf.to_yaml(cfg, resolve=True),
    )
    schedule.check_freeze_targets(len(model.net.layer_groups()))
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, max_epochs=schedule.total_epochs,
        plugins=[AtomicCheckpointIO()],
    )
    log.info("training %s on %d classes for %d epochs in %d stage(s)", cfg.model.backbone.name,
             datamodule.num_classes, schedule.total_epochs, len(schedule.stages))
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    checkpoint = _monitoring_checkpoint(trainer)
    if checkpoint is not None and checkpoint.best_model_score is not None:  # restored on resume too
        metrics["val/error_rate_best"] = float(checkpoint.best_model_score)
    skipped = datamodule.skipped_during_training
    if skipped:
        log.warning("%d image(s) became unreadable during training and were replaced by the next image "
                    "(see the warnings above)", skipped)
    summary = {
        "bad_files": len(datamodule.scan.unreadable),
        "skipped_during_training": skipped,
        "final": {k: v for k, v in metrics.items() if not k.endswith("_best")},
        "best": {"val/error_rate": metrics.get("val/error_rate_best", math.nan)},
        "best_checkpoint": checkpoint.best_model_path if checkpoint else None,
        "epochs": trainer.current_epoch,
        "classes": datamodule.classes,
    }
    write_json(output_dir / "metrics.json", summary)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(_hparams_for_tensorboard(cfg), metrics=metrics)
    return {**metrics, "output_dir": str(output_dir), "skipped_during_training": skipped}


def _hparams_for_tensorboard(cfg: DictConfig) -> dict[str, Any]:
    """The knobs people compare runs by, flattened (TensorBoard's hparams tab takes scalars)."""
    return {
        "backbone": cfg.model.backbone.name,
        "weights": str(cfg.model.backbone.weights),
        "size": cfg.data.size,
        "batch_size": cfg.data.batch_size,
        "weight_decay": cfg.optimizer.get("weight_decay", 0.0),
        "dropout": cfg.model.head.dropout,
        "stages": " | ".join(f"{s.epochs}ep lr={list(s.lr) if not isinstance(s.lr, float) else s.lr} "
                             f"freeze_to={s.freeze_to}" for s in cfg.schedule.stages),
        "precision": str(cfg.trainer.precision),
        "seed": cfg.get("seed"),
    }


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    # The command's result, for people and scripts (the rest goes to train.log).
    print(f"run directory: {metrics['output_dir']}")
    print(f"final val/error_rate: {metrics.get('val/error_rate', math.nan):.4f} "
          f"(best {metrics.get('val/error_rate_best', math.nan):.4f})")
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
