"""Train an image classifier: ``python -m src.train experiment=resnet50 data.root=DIR``.

The run itself is :func:`src.runs.training.train` (a function of the composed config, which tests and
the bench call); this is the thin Hydra wrapper that composes the config and prints where the run went.
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from src.runs.training import train, train_or_record_failure
from src.optim.fine_tune import register_resolvers
from src.core.user_errors import one_line_user_errors

register_resolvers()  # conf/schedule/fine_tune.yaml's ${fine_tune_stages:}, before Hydra composes a config


def final_result_line(metrics: dict) -> str:
    """The validation result; a run that stopped before its first validation (``+trainer.max_steps``
    inside epoch 1, ``trainer.limit_val_batches=0``) says so instead of printing nan."""
    if "val/error_rate" not in metrics:
        return ("final val/error_rate: none (no validation ran before the run stopped: trainer.max_steps, "
                "trainer.limit_val_batches or trainer.check_val_every_n_epoch ended it first; "
                "checkpoints/last.ckpt holds the weights)")
    return (f"final val/error_rate: {metrics['val/error_rate']:.4f} "
            f"(best {metrics.get('val/error_rate_best', math.nan):.4f})")


@one_line_user_errors
@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        metrics = train_or_record_failure(cfg)
        if metrics is None:
            print(f"job failed: see {Path(cfg.paths.output_dir) / f'{cfg.task_name}.log'}")
            return None
    else:
        metrics = train(cfg)
    if rank_zero_only.rank != 0:  # every DDP process returns here; the result is printed once
        return metrics.get(cfg.get("optimized_metric"))
    # The command's result, for people and scripts (the rest goes to train.log).
    print(f"run directory: {metrics['output_dir']}")
    print(final_result_line(metrics))
    if "test/error_rate" in metrics:
        print(f"test/error_rate: {metrics['test/error_rate']:.4f}  test/loss: {metrics['test/loss']:.4f} "
              f"({metrics['test_images']} images of test/)")
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
