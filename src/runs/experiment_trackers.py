"""What every experiment tracker of ``conf/logger/`` receives beyond Lightning's own logging.

Lightning already sends each logger the per-step and per-epoch metrics (``self.log``) and the
learning rate and beta1 of every parameter group (``LearningRateMonitor``). This module adds, for
every logger alike: the resolved config as flat params at the start, figures as images where the
tracker stores them, the final and best metrics at the end, and names a run after its run
directory, grouped by sweep (``docs/experiment-trackers.md``).

The loggers are Lightning's own classes; what differs between trackers (how a figure is stored,
how a run is closed) is the one table per concern below, keyed by logger class.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from src.callbacks.tracker_figures import IMAGE_FILE_WRITERS, writer_for
from src.core.extras import extra_problems
from src.core.problems import Problem

log = logging.getLogger(__name__)

# Config sections that are not knobs of the run (where files go, Hydra's own settings).
NOT_PARAMS = ("hydra", "paths")


def sweep_name(default: Any = None) -> Any:
    """``<task>-<sweep directory>`` for a job of a Hydra multirun (its MLflow experiment, its W&B
    group: the jobs of one sweep side by side), else ``default``."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return default
    hydra_cfg = HydraConfig.get()
    return f"{hydra_cfg.job.name}-{Path(hydra_cfg.sweep.dir).name}"


def run_name(output_dir: str) -> str:
    """A run is named after its run directory: ``<time>`` for a run, ``<sweep time>/<job>`` in a sweep."""
    path = Path(output_dir)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"{path.parent.name}/{path.name}"
    return path.name


def unless_env(name: str, value: Any) -> Any:
    """``value``, or None when the environment variable ``name`` is set (that setting then decides)."""
    return None if os.environ.get(name) else value


# ${sweep_name:DEFAULT}, ${run_name:${paths.output_dir}}, ${unless_env:VAR,VALUE} in conf/logger/*.yaml
OmegaConf.register_new_resolver("sweep_name", sweep_name, replace=True)
OmegaConf.register_new_resolver("run_name", run_name, replace=True)
OmegaConf.register_new_resolver("unless_env", unless_env, replace=True)


def flat_params(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``{"optimizer.weight_decay": 0.01, ...}``: the keys are the command-line
    overrides that set them, lists are written out (trackers take scalars)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, item in value.items():
                visit(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, (list, tuple, Mapping)):
            flat[prefix] = str(value)
        else:
            flat[prefix] = value

    visit("", {k: v for k, v in resolved.items() if k not in NOT_PARAMS and k != "logger"})
    return flat


def use_wandb_offline_without_login() -> None:
    """W&B asks for an API key when it has none; a training run must never wait for that. Without
    ``WANDB_API_KEY``, a ``wandb login`` or a ``WANDB_MODE``, runs are written offline (``wandb sync``
    uploads them later) and the log says so."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return
    try:
        logged_in = netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        logged_in = False
    if not logged_in:
        os.environ["WANDB_MODE"] = "offline"
        log.warning("W&B: no login found (WANDB_API_KEY, `wandb login`): logging offline under the run "
                    "directory's wandb/; upload with `wandb sync DIR`, or set WANDB_MODE to choose")


# The trackers that come with an optional extra: the logger class's name, the extra (Lightning's logger
# raises its own ModuleNotFoundError only when it is built, after the scan).
TRACKER_EXTRAS = {"WandbLogger": "wandb", "MLFlowLogger": "mlflow"}


def tracker_problems(logger_cfg: Mapping[str, Any] | None) -> list[Problem]:
    """Each logger of ``cfg.logger`` whose tracker's extra is not installed, named with the install command."""
    problems = []
    for name, config in (logger_cfg or {}).items():
        target = str((config or {}).get("_target_", ""))
        extra = TRACKER_EXTRAS.get(target.rpartition(".")[2])
        if extra is not None:
            problems += extra_problems(extra, f"logger.{name}", target)
    return problems


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """The loggers of ``cfg.logger``, each already holding the resolved config as flat params and
    the lr finder's plot if ``lr_find=true`` ran (it runs before the loggers exist)."""
    configs = list(cfg.get("logger", {}).values())
    if any(str(c.get("_target_", "")).endswith("WandbLogger") for c in configs):
        use_wandb_offline_without_login()
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:  # left open by a failed job of this sweep
            wandb.run.finish(exit_code=1)
    loggers = [instantiate(c) for c in configs]
    params = flat_params(cfg)
    lr_find_png = Path(cfg.paths.output_dir) / "lr_find.png"
    for logger in loggers:
        logger.log_hyperparams(params)
        write = writer_for(IMAGE_FILE_WRITERS, logger)
        if write is not None and lr_find_png.is_file():
            write(logger, "lr_find", lr_find_png)
    return loggers


def _finish_wandb(logger: WandbLogger) -> None:
    # One W&B run per process otherwise: the next job of a sweep would log into this one.
    logger.experiment.finish()


# What else closes a tracker's run (Lightning's finalize leaves a W&B run open).
RUN_CLOSERS: dict[type, Callable[[Any], None]] = {WandbLogger: _finish_wandb}


def log_run_end(loggers: Iterable[Logger], final: Mapping[str, float], best: Mapping[str, float], step: int) -> None:
    """The final and best validation metrics as ``final/...`` and ``best/...``, then close each run."""
    metrics = {**{f"final/{k}": v for k, v in final.items()}, **{f"best/{k}": v for k, v in best.items()}}
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
        logger.finalize("success")  # again: Lightning's closed the files before these metrics
        close = writer_for(RUN_CLOSERS, logger)
        if close is not None:
            close(logger)
