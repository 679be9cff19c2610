"""One ``summary.csv`` per Hydra multirun: every job's overrides, status and final metrics.

Registered as a Hydra callback in ``conf/hydra/default.yaml``; Hydra calls
:meth:`SweepSummary.on_multirun_end` once every job of the sweep (basic or Optuna sweeper, local
or SLURM launcher) has returned, on the machine that started the sweep.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from typing_extensions import override

log = logging.getLogger(__name__)


def _job_sort_key(job_dir: Path, sweep_dir: Path) -> tuple[int, str]:
    name = job_dir.relative_to(sweep_dir).as_posix()
    return (int(name), name) if name.isdigit() else (1 << 30, name)


def read_job(job_dir: Path) -> dict[str, Any]:
    """One row: the job's overrides as columns, ``status``, its final and best metrics."""
    overrides = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    row: dict[str, Any] = {}
    for override in overrides:
        key, _, value = str(override).partition("=")
        row[key] = value
    metrics_file = job_dir / "metrics.json"
    if not metrics_file.is_file():
        # Killed (out of memory, SLURM time limit) before it could write anything.
        return {**row, "status": "failed", "error": "no metrics.json: the job stopped before it finished"}
    metrics = json.loads(metrics_file.read_text())
    if metrics.get("status") == "failed":
        return {**row, "status": "failed", "error": metrics.get("error", "")}
    row["status"] = "completed"
    row.update(metrics.get("final", {}))
    row.update({f"best {k}": v for k, v in metrics.get("best", {}).items()})
    row["epochs"] = metrics.get("epochs")
    return row


def summarize_sweep(sweep_dir: Path, filename: str = "summary.csv") -> Path:
    """Write ``sweep_dir/filename`` with one row per job directory (one holding ``.hydra/overrides.yaml``)."""
    job_dirs = sorted(
        (p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")),
        key=lambda p: _job_sort_key(p, sweep_dir),
    )
    rows = [{"job": p.relative_to(sweep_dir).as_posix(), **read_job(p)} for p in job_dirs]
    columns: list[str] = []
    for row in rows:  # columns in order of first appearance: job, overrides, status, metrics
        columns += [k for k in row if k not in columns]
    if "error" in columns:  # the long free text last
        columns.append(columns.pop(columns.index("error")))
    path = sweep_dir / filename
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    failed = sum(r["status"] != "completed" for r in rows)
    log.info("sweep summary: %s (%d job(s), %d failed)", path, len(rows), failed)
    return path


class SweepSummary(Callback):
    """Writes ``summary.csv`` in the sweep directory when a multirun ends."""

    def __init__(self, filename: str = "summary.csv") -> None:
        self.filename = filename

    @override
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summarize_sweep(Path(config.hydra.sweep.dir), self.filename)
