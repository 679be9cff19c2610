"""A training run stopped by SIGTERM or Ctrl-C: say what was saved and how to resume, and exit non-zero.

Lightning's own signal handling is kept as it is (its SIGTERM handler, and SLURM's auto-requeue on the
requeue signal): it stops the loops at the next batch with ``SIGTERMException``, a ``SystemExit`` without
a status, so the process would exit 0 as if training had finished; after Ctrl-C it exits 1. A stopped
run exits ``128 + the signal's number`` instead (143 for SIGTERM, 130 for SIGINT), the status a shell
gives a process the signal ended, so a scheduler or script sees that the run did not finish.
"""

from __future__ import annotations

import logging
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from src.models.loading import read_checkpoint

log = logging.getLogger(__name__)

# The overrides a resume sets itself (see src.train.resolve_ckpt_path: `last` is RUN/checkpoints/last.ckpt).
RESUME_KEYS = ("ckpt_path", "hydra.run.dir")
# Hydra adds these to a sweep job's own overrides; they mean nothing to a single run.
SWEEP_KEYS = ("hydra.mode", "hydra.sweep.", "hydra.job.num", "hydra.job.id")


def stopping_signal(trainer: L.Trainer, stop: SystemExit) -> signal.Signals | None:
    """The signal that ended ``trainer.fit`` with ``stop``, or None for any other exit."""
    if not trainer.interrupted:
        return None
    # A DDP process that was not signalled itself learns of rank 0's SIGTERM from Lightning's broadcast.
    if trainer.received_sigterm or isinstance(stop, SIGTERMException):
        return signal.SIGTERM
    # Lightning catches Ctrl-C's KeyboardInterrupt and calls sys.exit(1) while handling it.
    return signal.SIGINT if isinstance(stop.__context__, KeyboardInterrupt) else None


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("~+")


def command_line(output_dir: Path, resume: bool) -> str:
    """The ``src.train`` command of this run, in its working directory and run directory; with ``resume``,
    from its ``checkpoints/last.ckpt`` (``ckpt_path=last``)."""
    tail = [*(["ckpt_path=last"] if resume else []), f"hydra.run.dir={output_dir}"]
    if not HydraConfig.initialized():  # train(cfg) called from Python: the overrides are the caller's
        return " ".join(["python -m src.train [the same overrides]", *map(shlex.quote, tail)])
    hydra = HydraConfig.get()
    dropped = (*RESUME_KEYS, *SWEEP_KEYS) if resume else ("hydra.run.dir", *SWEEP_KEYS)
    overrides = [o for o in [*hydra.overrides.hydra, *hydra.overrides.task] if not _override_key(o).startswith(dropped)]
    words = [sys.executable, "-m", "src.train", *overrides, *tail]
    return f"cd {shlex.quote(hydra.runtime.cwd)} && " + " ".join(map(shlex.quote, words))


def interruption_message(signum: signal.Signals, trainer: L.Trainer, output_dir: Path) -> str:
    """One line: where the run stopped, the checkpoint it can resume from and the command that does."""
    stopped = f"stopped by {signum.name} at epoch {trainer.current_epoch}, global step {trainer.global_step}"
    last = output_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return (f"{stopped}, before the end of the first epoch (last.ckpt is written at the end of each epoch): "
                f"nothing was saved to resume from; run again with: {command_line(output_dir, resume=False)}")
    checkpoint = read_checkpoint(last, mmap=True)
    return (f"{stopped}; saved {last} (the end of epoch {checkpoint['epoch']}, global step "
            f"{checkpoint['global_step']}); resume with: {command_line(output_dir, resume=True)}")


@contextmanager
def exit_status_of_signals(trainer: L.Trainer, output_dir: Path) -> Iterator[None]:
    """Around ``trainer.fit``: a fit stopped by SIGTERM or Ctrl-C logs :func:`interruption_message` and
    raises ``SystemExit(128 + signal)``; any other exit goes on as it was."""
    try:
        yield
    except SystemExit as stop:
        signum = stopping_signal(trainer, stop)
        if signum is None:
            raise
        if rank_zero_only.rank == 0:  # every DDP process stops alike; one line says so
            log.warning(interruption_message(signum, trainer, output_dir))
        raise SystemExit(128 + signum) from stop
