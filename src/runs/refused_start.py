"""Leave no run directory behind when ``src.train`` refuses to start.

Hydra creates ``hydra.run.dir`` and writes ``.hydra/`` and ``train.log`` into it before it calls the
task, so a run refused at its first checks (``ckpt_path=last`` with no run to resume, a missing,
damaged or finished ``ckpt_path``, a config problem) would leave a directory holding nothing of
its own. Hydra's callbacks cannot stop a run (it turns their exceptions into warnings), so this
one cleans up after it instead: it notes whether the directory existed before the run, and when
the job failed, removes it if it is new and holds only what Hydra wrote (and the parent folders
Hydra made for it, e.g. ``outputs/train/runs/``, when they are new and left empty).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

HYDRA_OUTPUT_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}


def holds_only_hydra_files(run_dir: Path, task_name: str, hydra_subdir: str | None) -> bool:
    """``run_dir`` has nothing but Hydra's ``.hydra/`` (its three files) and the task's log."""
    entries = {p.name for p in run_dir.iterdir()}
    if not entries <= {hydra_subdir, f"{task_name}.log"}:
        return False
    return hydra_subdir not in entries or {p.name for p in (run_dir / hydra_subdir).iterdir()} <= HYDRA_OUTPUT_FILES


class RemoveRunDirOfRefusedStart(Callback):
    """``hydra.callbacks`` of ``conf/train.yaml``; single runs only (a sweep's jobs record their failure
    in their own directory, ``metrics.json``)."""

    def __init__(self) -> None:
        self.new_run_dir: Path | None = None
        self.first_new_folder: Path | None = None  # the outermost folder Hydra will create

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Before run_job creates it; Hydra's ${now:...} resolver caches its value, so this is that directory.
        run_dir = Path(str(config.hydra.run.dir)).absolute()
        if run_dir.exists():
            self.new_run_dir = self.first_new_folder = None
            return
        self.new_run_dir = self.first_new_folder = run_dir
        while not self.first_new_folder.parent.exists():
            self.first_new_folder = self.first_new_folder.parent

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.new_run_dir is None or job_return.status != JobStatus.FAILED:
            return
        run_dir = Path(str(config.hydra.runtime.output_dir))
        if run_dir != self.new_run_dir or not run_dir.is_dir():
            return
        if holds_only_hydra_files(run_dir, str(config.task_name), config.hydra.output_subdir):
            shutil.rmtree(run_dir)
            for folder in run_dir.parents:
                if not folder.is_relative_to(self.first_new_folder) or any(folder.iterdir()):
                    break
                folder.rmdir()
            log.info("removed %s: the run stopped before writing anything of its own", run_dir)
