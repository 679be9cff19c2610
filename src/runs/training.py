"""A whole training run as a function of the composed config: ``train(cfg) -> metrics``.

``python -m src.train`` (:mod:`src.train`) is the thin Hydra wrapper around it; tests, the bench and
sweeps call :func:`train` directly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from src.runs.config_checks import check_train_config
from src.runs.experiment_trackers import log_run_end
from src.runs.lr_finding import suggest_lr, with_max_lr
from src.models.loading import check_resumable, checkpoint_classes, epochs_finished
from src.optim.lr_finder import SUGGESTIONS
from src.runs.builder import Run, build_run
from src.runs.interruption import exit_status_of_signals
from src.runs.run_lock import run_directory_lock
from src.core.launch_handoff import handed_over, received
from src.runs.run_files import (
    check_room_for_checkpoints,
    check_writable,
    checkpoint_files,
    write_json,
    write_resolved_config,
)
from src.runs.held_out_test import evaluate_test_subset

log = logging.getLogger(__name__)


def _monitoring_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that keeps the best model (the one with a monitored metric)."""
    return next((c for c in trainer.checkpoint_callbacks if c.monitor is not None), None)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` is this run directory's ``checkpoints/last.ckpt`` (resume a killed run in place:
    ``ckpt_path=last hydra.run.dir=RUN``); any other value is a checkpoint path, or None."""
    if ckpt_path is None:
        return None
    if ckpt_path != "last":
        return str(check_resumable(ckpt_path))  # a damaged or foreign file fails here, not after the scan
    last = output_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(
            f"ckpt_path=last resumes from {last}, which does not exist; pass the run directory of the run to "
            "resume (hydra.run.dir=outputs/train/runs/<time>) or a checkpoint path (ckpt_path=RUN/checkpoints/last.ckpt)"
        )
    return str(check_resumable(last))


def check_epochs_left(ckpt_path: str, total_epochs: int) -> None:
    """Refuse a checkpoint that has finished every epoch of the schedule: resuming it would train
    nothing and report NaN metrics (Lightning stops at once, before any validation)."""
    finished = epochs_finished(ckpt_path)
    if finished >= total_epochs:
        raise ValueError(
            f"ckpt_path={ckpt_path!r} has finished all its epochs ({finished} of the {total_epochs} that "
            "schedule.stages trains), so there is nothing left to resume. To train it more, add epochs: a longer "
            "last stage or another stage in schedule.stages, with the same ckpt_path. To start a new run, "
            "leave out ckpt_path; to evaluate it, use python -m src.evaluate ckpt_path=..."
        )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the model described by ``cfg``; return the final and best validation metrics.

    The run directory (``cfg.paths.output_dir``) receives ``config.yaml`` (resolved),
    ``split.csv``, ``checkpoints/``, ``tensorboard/`` and ``metrics.json``.
    """
    check_train_config(cfg)  # every config problem at once, before any data is read
    output_dir = Path(cfg.paths.output_dir)
    check_writable(output_dir)
    with run_directory_lock(output_dir):  # a second run into this directory is refused here
        return _train_in(cfg, output_dir)


def _train_in(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """:func:`train` once the run directory is this run's."""
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    if ckpt_path is not None:
        check_epochs_left(ckpt_path, instantiate(cfg.schedule).total_epochs)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    run = build_run(cfg)
    check_room_for_checkpoints(output_dir, run.module.net, checkpoint_files(cfg.get("callbacks")))
    if ckpt_path is not None:  # e.g. shards written again since, with other classes
        run.datamodule.source.check_classes_of(checkpoint_classes(ckpt_path), f"ckpt_path={ckpt_path!r}")
    handoff = {}  # what the DDP processes that trainer.fit launches receive instead of doing it again
    if cfg.get("lr_find"):
        handoff["first_stage_lr"] = _use_lr_finder_suggestion(run)
    write_resolved_config(output_dir / "config.yaml", cfg)
    datamodule, model, schedule = run.datamodule, run.module, run.module.schedule
    trainer = run.trainer()
    log.info("training %s on %d classes for %d epochs in %d stage(s)", cfg.model.backbone.name,
             datamodule.num_classes, schedule.total_epochs, len(schedule.stages))
    with exit_status_of_signals(trainer, output_dir), handed_over(trainer, lambda: {**handoff, **datamodule.handoff()}):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    stopped_after = _say_when_early_stopping_ended_the_run(trainer, schedule.total_epochs)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "perf/"))}
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
        "final": {k: v for k, v in metrics.items() if k.startswith("val/") and not k.endswith("_best")},
        "performance": {k: v for k, v in metrics.items() if k.startswith("perf/")},  # the last epoch's
        # none before a first validation (+trainer.max_steps inside epoch 1): JSON has no NaN
        "best": {"val/error_rate": metrics["val/error_rate_best"]} if "val/error_rate_best" in metrics else {},
        "best_checkpoint": checkpoint.best_model_path if checkpoint else None,
        "epochs": trainer.current_epoch,
        "stopped_early_after_epoch": stopped_after,
        "classes": datamodule.classes,
        "multi_label": datamodule.multi_label,
    }
    # root/test/<class>/ images, when there are any: scored with the best checkpoint, after training.
    summary["test"] = evaluate_test_subset(trainer, model, datamodule, summary["best_checkpoint"])
    metrics.update({k: v for k, v in (summary["test"] or {}).items() if k.startswith("test/")})
    write_json(output_dir / "metrics.json", summary)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(_hparams_for_tensorboard(cfg), metrics=metrics)
    log_run_end(trainer.loggers, summary["final"], summary["best"], trainer.global_step)
    return {**metrics, "output_dir": str(output_dir), "skipped_during_training": skipped,
            "test_images": (summary["test"] or {}).get("images", 0)}


def _say_when_early_stopping_ended_the_run(trainer: L.Trainer, planned_epochs: int) -> int | None:
    """Log which epoch early stopping ended the run at, and why; the epoch (1-based) or None.

    Lightning stops without a word by default; a user reading the log would otherwise take a
    6-epoch plan that ran 2 epochs for a crash or a bug.
    """
    for callback in trainer.early_stopping_callbacks:
        if callback.stopped_epoch > 0:
            epoch = callback.stopped_epoch + 1
            log.warning("early stopping ended the run after epoch %d of the %d planned: %s did not improve by more "
                        "than min_delta=%s in %d validation(s) (best %s); the one-cycle schedule stopped before "
                        "its learning rate came down", epoch, planned_epochs, callback.monitor, callback.min_delta,
                        callback.patience, f"{float(callback.best_score):.4f}")
            return epoch
    return None


def _use_lr_finder_suggestion(run: Run) -> float | list[float]:
    """Run the finder on the run's own module and data (frozen as the first stage), then train that
    stage at its suggestion; the random state is the finder's own, so the run is the one that
    typing the suggested lr would give. Returns the first stage's new lr.

    A DDP process launched by rank 0 takes rank 0's choice instead of running the finder again
    (every process must train at the same rate)."""
    cfg = run.cfg
    suggestion = cfg.lr_finder.suggestion
    if suggestion not in SUGGESTIONS:
        raise ValueError(f"lr_finder.suggestion={suggestion!r}; expected one of {', '.join(SUGGESTIONS)}")
    first = cfg.schedule.stages[0]
    handed = received()
    if handed is not None and "first_stage_lr" in handed:
        first.lr = handed["first_stage_lr"]
        suggestion = "rank 0's"
    else:
        suggestions = suggest_lr(run.module, run.datamodule, cfg, stage_index=0)
        lr = OmegaConf.to_object(first.lr) if OmegaConf.is_config(first.lr) else first.lr
        first.lr = with_max_lr(lr, suggestions[suggestion])
    run.use_schedule_of_config()
    log.info("lr_find: stage %r trains at lr=%s (%s suggestion)", first.get("name", 0), first.lr, suggestion)
    return OmegaConf.to_object(first.lr) if OmegaConf.is_config(first.lr) else first.lr


def _describe_stage(stage: DictConfig) -> str:
    lr = OmegaConf.to_object(stage.lr) if OmegaConf.is_config(stage.lr) else stage.lr
    return f"{stage.epochs}ep lr={lr} freeze_to={stage.get('freeze_to', 0)}"


def _hparams_for_tensorboard(cfg: DictConfig) -> dict[str, Any]:
    """The knobs people compare runs by, flattened (TensorBoard's hparams tab takes scalars)."""
    return {
        "backbone": cfg.model.backbone.name,
        "weights": str(cfg.model.backbone.weights),
        "size": cfg.data.size,
        "batch_size": cfg.data.batch_size,
        "weight_decay": cfg.optimizer.get("weight_decay", 0.0),
        "dropout": cfg.model.head.dropout,
        "stages": " | ".join(_describe_stage(stage) for stage in cfg.schedule.stages),
        "precision": str(cfg.trainer.precision),
        "seed": cfg.get("seed"),
        "labels": get_class(cfg.data.labels._target_).name + (" (multi-label)" if cfg.model.get("multi_label") else ""),
    }


def train_or_record_failure(cfg: DictConfig) -> dict[str, Any] | None:
    """A sweep job's error is logged and written to its metrics.json; the sweep goes on.

    Hydra's sweepers stop the whole sweep at a job's exception; returning ``None`` instead lets
    the other jobs run, the basic sweeper finish, and Optuna record the trial as failed.
    """
    try:
        return train(cfg)
    except Exception as error:  # any error of one job: recorded, not raised, in a multirun only
        log.exception("this job failed; the sweep goes on with the next one")
        write_json(Path(cfg.paths.output_dir) / "metrics.json",
                   {"status": "failed", "error": f"{type(error).__name__}: {error}"})
        return None
